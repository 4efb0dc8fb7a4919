"""API keys: `TICKETSEARCH_API_KEYS` holds comma-separated KEY:read or KEY:write pairs (write implies read)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from ticketsearch.errors import TicketsearchError

SCOPES = ("read", "write")


@dataclass(frozen=True)
class ApiKeys:
    keys: tuple[tuple[str, str], ...]  # (key, scope)

    @classmethod
    def parse(cls, spec: str) -> ApiKeys:
        out: list[tuple[str, str]] = []
        for n, item in enumerate(p.strip() for p in spec.split(",")):
            if not item:
                continue
            key, sep, scope = item.rpartition(":")
            if not sep or not key or scope not in SCOPES:
                # never echo the key itself: say which entry is wrong
                raise TicketsearchError(f"TICKETSEARCH_API_KEYS entry {n + 1} must be KEY:read or KEY:write")
            if len(key) < 8:
                raise TicketsearchError(f"TICKETSEARCH_API_KEYS entry {n + 1}: keys must be at least 8 characters")
            out.append((key, scope))
        return cls(tuple(out))

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def scope_of(self, presented: str) -> str | None:
        """The scope of a presented key, compared in constant time; None if no key matches."""
        found = None
        for key, scope in self.keys:
            if hmac.compare_digest(key.encode(), presented.encode()):
                found = scope if found != "write" else found
        return found

    @staticmethod
    def allows(scope: str, needed: str) -> bool:
        return scope == "write" or needed == "read"
