"""Who may do what: one FastAPI security dependency per route.

`require(scope)` guards a route of one collection (`/v1/collections/{name}/...`); `require_default(scope)` the
same route's alias without a name (the `default` collection); `require_global(scope)` a route about no one
collection (the list of collections, metrics). Each answers, in this order: 401 without a known key; 422 for a
malformed collection name; 404 for a collection the key may not see (the very answer a missing collection gets,
so names do not leak); 403 for a visible collection without the scope. The route then finds the `Access` in
`request.state.access`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Path as PathParam
from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ticketsearch.errors import QueryError
from ticketsearch.names import COLLECTION_PATTERN, NAME_MAX, check_collection_name
from ticketsearch.pipeline.collections import DEFAULT, not_found

from .auth import CHALLENGE, ApiKeys, Grants, Unauthorized
from .gate import COLLECTION_LABEL, ApiError

bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer KEY` (read, write or admin scope, "
                    "on every collection or on one).")
CollectionName = Annotated[str, PathParam(description=f"The collection: 1-{NAME_MAX} characters of a-z, 0-9, '_' "
                                          "and '-'.", max_length=NAME_MAX, pattern=COLLECTION_PATTERN)]


@dataclass(frozen=True)
class Access:
    grants: Grants
    collection: str | None  # the route's collection (None: a route about no one collection)


def grants(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Grants:
    """`credentials` is for the OpenAPI document (the bearer scheme); the rule reads the header itself. The gate
    has identified the caller already (`Gate`, before the body is read): its answer is reused."""
    found = getattr(request.state, "grants", None)
    if isinstance(found, Grants):
        return found
    keys: ApiKeys = request.app.state.keys
    try:
        return keys.identify(request.headers.get("authorization"))
    except Unauthorized as exc:
        raise ApiError(401, "header.authorization", exc.reason, CHALLENGE, "unauthorized") from None


def check(request: Request, found: Grants, needed: str, name: str | None, must_exist: bool = False) -> Access:
    if name is None:
        if not found.allows(needed, None):
            raise ApiError(403, "header.authorization", f"this route needs a key with {needed} scope on every "
                           "collection (an entry without @COLLECTION)", type_="forbidden")
    else:
        try:
            check_collection_name(name)
        except QueryError as exc:
            raise ApiError(422, "path.name", str(exc), type_="value_error") from None
        if not found.sees(name) or (must_exist and not request.app.state.service.collections.exists(name)):
            raise ApiError(404, "path.name", not_found(name), type_="not_found")
        if not found.allows(needed, name):
            raise ApiError(403, "header.authorization", f"this key has {found.scope_for(name)} scope on collection "
                           f"{name!r}; {needed} scope is needed", type_="forbidden")
        request.scope[COLLECTION_LABEL] = name
    access = Access(found, name)
    request.state.access = access
    return access


Guard = Callable[..., Awaitable[Access]]


def require(needed: str, must_exist: bool = True) -> Guard:
    """`must_exist`: a missing collection is 404 here, before the request's body is looked at (False for the
    route that creates one)."""

    async def guard(request: Request, name: CollectionName,
                    credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> Access:
        return check(request, grants(request, credentials), needed, name, must_exist)

    return guard


def require_default(needed: str) -> Guard:
    async def guard(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> Access:
        return check(request, grants(request, credentials), needed, DEFAULT, must_exist=True)

    return guard


def require_global(needed: str) -> Guard:
    async def guard(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> Access:
        return check(request, grants(request, credentials), needed, None)

    return guard


def require_key() -> Guard:
    """Any known key (a route that filters what it answers by the key's collections)."""

    async def guard(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> Access:
        access = Access(grants(request, credentials), None)
        request.state.access = access
        return access

    return guard
