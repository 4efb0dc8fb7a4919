"""The user-facing layer: the `ticketsearch` command line (and, later, the HTTP query service)."""
