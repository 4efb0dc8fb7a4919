"""API keys and what each may do.

`TICKETSEARCH_API_KEYS` holds comma-separated `KEY:SCOPE[@COLLECTION]` entries. Scopes: `read`; `write`
(implies read); `admin` (create, delete and train collections, and everything else). An entry without
`@COLLECTION` applies to every collection; the same key may have several entries (one per collection).

The service checks a request with `Grants.check` from one FastAPI security dependency per route
(`service.app.require`): no key or an unknown key is 401; a collection the key may not see is 404, the same
answer as for a collection that does not exist, so that names do not leak; a visible collection without the
scope is 403.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from ticketsearch.errors import TicketsearchError
from ticketsearch.names import is_collection_name

SCOPES = ("read", "write", "admin")
RANK = {"read": 0, "write": 1, "admin": 2}
MIN_KEY = 16  # characters: a key is a password that a client sends on every request
ENTRY_FORMAT = "KEY:read, KEY:write or KEY:admin, optionally followed by @COLLECTION"


@dataclass(frozen=True)
class Grant:
    scope: str
    collection: str | None  # None: every collection

    def covers(self, collection: str | None) -> bool:
        """Does this grant apply to `collection` (None: a route about no one collection, or about all)?"""
        return self.collection is None or self.collection == collection


@dataclass(frozen=True)
class Grants:
    """What one presented key may do (empty when keys are off: then everything is allowed)."""

    grants: tuple[Grant, ...]
    open: bool = False  # no keys configured: everything is allowed
    who: str = ""  # the key's digest (never the key): whose budget of costly requests a request uses

    def sees(self, collection: str) -> bool:
        return self.open or any(g.covers(collection) for g in self.grants)

    def scope_for(self, collection: str | None) -> str | None:
        """The widest scope this key has on `collection` (on every collection when None)."""
        if self.open:
            return "admin"
        scopes = [g.scope for g in self.grants
                  if (g.collection is None if collection is None else g.covers(collection))]
        return max(scopes, key=RANK.__getitem__) if scopes else None

    def allows(self, needed: str, collection: str | None) -> bool:
        scope = self.scope_for(collection)
        return scope is not None and RANK[scope] >= RANK[needed]


OPEN = Grants((), open=True)
KEY_REQUIRED = "an API key is required: Authorization: Bearer KEY"
CHALLENGE = {"WWW-Authenticate": "Bearer"}


class Unauthorized(Exception):
    """No key, or an unknown one (401, `header.authorization`)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class ApiKeys:
    keys: tuple[tuple[str, str, str | None], ...]  # (key, scope, collection or None)

    @classmethod
    def parse(cls, spec: str) -> ApiKeys:
        out: list[tuple[str, str, str | None]] = []
        for n, item in enumerate(p.strip() for p in spec.split(",")):
            if not item:
                continue
            key, sep, rest = item.rpartition(":")
            scope, at, collection = rest.partition("@")
            if not sep or not key or scope not in SCOPES or (at and not is_collection_name(collection)):
                # never echo the key itself: say which entry is wrong
                raise TicketsearchError(f"TICKETSEARCH_API_KEYS entry {n + 1} must be {ENTRY_FORMAT} "
                                        "(a collection name: a-z, 0-9, '_' and '-')")
            if len(key) < MIN_KEY:
                raise TicketsearchError(
                    f"TICKETSEARCH_API_KEYS entry {n + 1}: keys must be at least {MIN_KEY} characters (a random "
                    "one: python -c 'import secrets; print(secrets.token_urlsafe(24))')")
            out.append((key, scope, collection if at else None))
        return cls(tuple(out))

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def grants_of(self, presented: str) -> Grants | None:
        """Every grant of a presented key, compared in constant time against each configured key; None if no
        key matches."""
        found = []
        for key, scope, collection in self.keys:
            if hmac.compare_digest(key.encode(), presented.encode()):
                found.append(Grant(scope, collection))
        return Grants(tuple(found), who=hashlib.sha256(presented.encode()).hexdigest()[:16]) if found else None

    def identify(self, authorization: str | None) -> Grants:
        """What the `Authorization` header's key may do (everything when keys are off). Raises Unauthorized
        without a bearer key or with an unknown one: the one rule, asked by the gate before a request costs
        anything and by each route's guard."""
        if not self.enabled:
            return OPEN
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(KEY_REQUIRED)
        found = self.grants_of(token.strip())
        if found is None:
            raise Unauthorized("unknown API key")
        return found

    def scope_of(self, presented: str, collection: str | None = None) -> str | None:
        """The widest scope of a presented key on `collection` (None: its scope on every collection)."""
        grants = self.grants_of(presented)
        return grants.scope_for(collection) if grants else None

    @staticmethod
    def allows(scope: str, needed: str) -> bool:
        return RANK[scope] >= RANK[needed]
