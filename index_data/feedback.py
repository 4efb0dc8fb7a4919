"""Agents' decisions on pairs of tickets ("yes, that one is a duplicate" or "no"), kept in the ticket store.

One row per unordered pair: the latest decision on a pair wins, whichever of the two tickets it was made from.
Training reads them beside the links in the data: confirmed pairs as positives, rejected pairs as hard
negatives (`pipeline.training`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from ticketsearch.errors import QueryError, RequestError

from .store import TicketStore

Label = Literal["duplicate", "not_duplicate"]
LABELS = ("duplicate", "not_duplicate")
DDL = ("CREATE TABLE IF NOT EXISTS feedback (pair_a VARCHAR NOT NULL, pair_b VARCHAR NOT NULL, "
       "ticket_id VARCHAR NOT NULL, candidate_id VARCHAR NOT NULL, label VARCHAR NOT NULL, by_whom VARCHAR, "
       "decided_at TIMESTAMP NOT NULL, PRIMARY KEY (pair_a, pair_b))")
COLUMNS = "ticket_id, candidate_id, label, by_whom, decided_at"


@dataclass(frozen=True)
class Decision:
    ticket_id: str
    candidate_id: str
    label: str
    by: str | None
    at: datetime  # naive UTC


MAX_BY = 200  # characters of who decided (the API's FeedbackRequest states the same limit)


def decide(get: Callable[[str], object], ticket_id: str, candidate_id: str, label: str,
           by: str | None = None) -> Decision:
    """A decision made now, with one index's checks wherever it is kept: QueryError for an unknown label or a
    ticket paired with itself, NotFoundError (from `get`, the ticket lookup of a store or of a sharded
    collection) for an unknown ticket."""
    if label not in LABELS:
        raise QueryError(f"label must be one of {', '.join(LABELS)}, got {label!r}")
    if by is not None and (not isinstance(by, str) or len(by) > MAX_BY):
        raise RequestError(f"must be a string of at most {MAX_BY} characters", field="by")
    get(ticket_id)  # both must exist: NotFoundError otherwise
    get(candidate_id)
    if ticket_id == candidate_id:
        raise QueryError("a ticket cannot be paired with itself")
    return Decision(ticket_id, candidate_id, label, by, datetime.now(UTC).replace(tzinfo=None))


def store_decision(store: TicketStore, d: Decision) -> None:
    """Keep a decision as the pair's latest. A sharded collection keeps it in the shard of each of its two
    tickets (`pipeline.sharded`), whose store then holds one of them only."""
    a, b = sorted((d.ticket_id, d.candidate_id))
    store.con.execute(DDL)
    store.con.execute(f"INSERT OR REPLACE INTO feedback (pair_a, pair_b, {COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                      [a, b, d.ticket_id, d.candidate_id, d.label, d.by, d.at])


def record(store: TicketStore, ticket_id: str, candidate_id: str, label: str, by: str | None = None) -> Decision:
    """Store a decision (NotFoundError for an unknown ticket, QueryError for a ticket paired with itself)."""
    d = decide(store.get, ticket_id, candidate_id, label, by)
    store_decision(store, d)
    return d


def for_ticket(store: TicketStore, ticket_id: str) -> list[Decision]:
    """The decisions on pairs that hold this ticket, newest first (NotFoundError for an unknown ticket)."""
    store.get(ticket_id)
    if not store.has_table("feedback"):
        return []
    rows = store.con.execute(f"SELECT {COLUMNS} FROM feedback WHERE pair_a = ? OR pair_b = ? "
                             "ORDER BY decided_at DESC, candidate_id", [ticket_id, ticket_id]).fetchall()
    return [Decision(*r) for r in rows]


def all_decisions(store: TicketStore) -> list[Decision]:
    """Every pair's latest decision whose two tickets are both still stored."""
    if not store.has_table("feedback"):
        return []
    rows = store.con.execute(
        f"SELECT {', '.join('f.' + c for c in COLUMNS.split(', '))} FROM feedback f "
        "JOIN tickets a ON a.id = f.pair_a JOIN tickets b ON b.id = f.pair_b ORDER BY f.decided_at").fetchall()
    return [Decision(*r) for r in rows]
