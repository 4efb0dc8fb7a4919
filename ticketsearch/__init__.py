"""ticketsearch: retrieve-then-rerank search for support and bug tickets.

    from ticketsearch import TicketIndex
    idx = TicketIndex.open("demo/index")
    idx.search("customers charged twice", k=5)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ticketsearch.api import TicketIndex
    from ticketsearch.results import DuplicateResult, Hit, SearchResult

__all__ = ["DuplicateResult", "Hit", "SearchResult", "TicketIndex"]


def __getattr__(name: str) -> Any:
    # imported on first use, so that `import ticketsearch.errors` (every layer does) loads no model code
    if name == "TicketIndex":
        from ticketsearch.api import TicketIndex  # deferred: the package attribute loads on first use

        return TicketIndex
    if name in ("Hit", "SearchResult", "DuplicateResult"):
        from ticketsearch import results  # deferred: the package attribute loads on first use

        return getattr(results, name)
    raise AttributeError(f"module 'ticketsearch' has no attribute {name!r}")
