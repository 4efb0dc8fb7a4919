"""Webhook deliveries already handled, kept in the ticket store: a tracker that sends the same delivery again
(a retry, or a replay) gets the first answer back and nothing is written twice."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from .store import TicketStore

DDL = ("CREATE TABLE IF NOT EXISTS hook_deliveries (source VARCHAR NOT NULL, delivery_id VARCHAR NOT NULL, "
       "received_at TIMESTAMP NOT NULL, response VARCHAR NOT NULL, PRIMARY KEY (source, delivery_id))")


def answered(store: TicketStore, source: str, delivery_id: str) -> dict[str, Any] | None:
    """The answer given to this delivery before, or None."""
    if not store.has_table("hook_deliveries"):
        return None
    rows = store.con.execute("SELECT response FROM hook_deliveries WHERE source = ? AND delivery_id = ?",
                             [source, delivery_id]).fetchall()
    return dict(json.loads(rows[0][0])) if rows else None


def remember(store: TicketStore, source: str, delivery_id: str, response: dict[str, Any]) -> None:
    store.con.execute(DDL)
    store.con.execute("INSERT OR IGNORE INTO hook_deliveries VALUES (?, ?, ?, ?)",
                      [source, delivery_id, datetime.now(UTC).replace(tzinfo=None), json.dumps(response)])
