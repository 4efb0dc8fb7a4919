"""Ticket data: schema, feature vocabularies, input readers and the DuckDB store (the source of truth)."""
