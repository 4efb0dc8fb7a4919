"""First-stage retrieval: the bi-encoder, the FAISS vector index, index building and search."""
