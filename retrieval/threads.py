"""The process's thread counts for FAISS (OpenMP) and torch: process-wide, so they are set by the entry point
(the CLI, the service, `TicketIndex.open`, a Ray worker), once, and never by a constructor.
Why the defaults are what they are: docs/SETTINGS.md."""

from __future__ import annotations

import faiss

from ticketsearch.settings import Settings


def apply_threads(settings: Settings) -> None:
    """FAISS searches on `search_threads` (0: the library's default); torch on `threads` (0: its default)."""
    if settings.search_threads:
        faiss.omp_set_num_threads(settings.search_threads)
    if settings.threads:
        import torch  # deferred: heavy, and needed only where a count was asked for

        torch.set_num_threads(settings.threads)
