"""Second-stage reranking (the cross-attention fusion pair model)."""
