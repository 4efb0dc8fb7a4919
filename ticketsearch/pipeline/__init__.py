"""Orchestration above the first stage and the reranker: the search pipeline, training and evaluation."""
