"""ticketsearch: retrieve-then-rerank search for support and bug tickets."""
