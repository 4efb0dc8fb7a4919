"""Clients of a running `ticketsearch serve`: `Client` (blocking) and `AsyncClient` (asyncio), the same methods.

```python
from ticketsearch.client import Client
with Client("http://127.0.0.1:8000", key="...") as c:
    c.create_collection("acme", schema="support")
    c.upsert([{"id": "A-1", "title": "Refund missing", "created": "2025-01-02"}], collection="acme")
    c.search("customers charged twice", k=5, collection="acme").hits[0].id
    job = c.train(collection="acme"); c.job(job.id, collection="acme").state
```

Every method takes `collection=` (None: the service's `default` collection, through the unprefixed routes) and
returns the typed models the server answers with. A 503 is retried after its `Retry-After`, at most `retries`
times; then, and for every 4xx, one typed error per status carries the server's detail (`ServiceError.detail`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from ticketsearch.errors import ConflictError, NotFoundError, QueryError, TicketsearchError, UnavailableError
from ticketsearch.requests import DuplicateRequest, SearchRequest
from ticketsearch.results import (
    CollectionInfo,
    CollectionSchema,
    DuplicateResult,
    FeedbackDecision,
    JobInfo,
    SearchResult,
    TicketOut,
    TrainParams,
)
from ticketsearch.service.schemas import DeleteResponse, UpsertResponse

MAX_RETRY_WAIT_S = 30.0


# ---- errors: one per status -------------------------------------------------------------------------------
class ServiceError(TicketsearchError):
    """The service refused a request. `status`, the server's `detail` items ({field, reason, type})."""

    status = 0

    def __init__(self, message: str, detail: list[dict[str, Any]] | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.detail = detail or []
        self.retry_after = retry_after


class BadRequest(ServiceError):
    status = 400


class Unauthorized(ServiceError):
    status = 401


class Forbidden(ServiceError):
    status = 403


class NotFound(ServiceError, NotFoundError):
    status = 404


class MethodNotAllowed(ServiceError):
    status = 405


class Conflict(ServiceError, ConflictError):
    status = 409


class PayloadTooLarge(ServiceError):
    status = 413


class Unprocessable(ServiceError, QueryError):
    status = 422


class Unavailable(ServiceError, UnavailableError):
    status = 503


ERRORS: dict[int, type[ServiceError]] = {e.status: e for e in (
    BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed, Conflict, PayloadTooLarge, Unprocessable,
    Unavailable)}


def error_for(url: str, response: httpx.Response) -> ServiceError:
    try:
        detail = list(response.json()["detail"])
        reason = "; ".join(f"{i['field']}: {i['reason']}" for i in detail)
    except (ValueError, KeyError, TypeError):
        detail, reason = [], response.text[:200]
    kind = ERRORS.get(response.status_code, ServiceError)
    return kind(f"{url} answered {response.status_code}: {reason}", detail, retry_after(response))


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(max(float(value), 0.0), MAX_RETRY_WAIT_S) if value is not None else None
    except ValueError:
        return None


# ---- the requests, built once for both clients ------------------------------------------------------------
@dataclass
class Call:
    method: str
    path: str
    parse: Any  # a model class, a TypeAdapter, or None (no body)
    json: Any = None
    params: dict[str, Any] | None = None

    def result(self, response: httpx.Response) -> Any:
        if self.parse is None:
            return None
        if isinstance(self.parse, TypeAdapter):
            return self.parse.validate_python(response.json())
        return self.parse.model_validate(response.json())


def jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def tid(ticket_id: str) -> str:
    """An id as one path segment: percent-encoded, dots too, so that no id ('..') can change the route."""
    return quote(ticket_id, safe="").replace(".", "%2E")


class Calls:
    """The HTTP request of each method (both clients send these)."""

    def __init__(self, default_collection: str | None) -> None:
        self.default_collection = default_collection

    def base(self, collection: str | None) -> str:
        name = collection if collection is not None else self.default_collection
        return "/v1" if name is None else f"/v1/collections/{quote(name, safe='')}"

    def search(self, req: SearchRequest, collection: str | None) -> Call:
        return Call("POST", f"{self.base(collection)}/search", SearchResult,
                    json=req.model_dump(mode="json", exclude_defaults=True))

    def duplicates(self, req: DuplicateRequest, collection: str | None) -> Call:
        return Call("POST", f"{self.base(collection)}/duplicates", DuplicateResult,
                    json=req.model_dump(mode="json", exclude_defaults=True))

    def schema(self, collection: str | None) -> Call:
        return Call("GET", f"{self.base(collection)}/schema", CollectionSchema)

    def upsert(self, tickets: Mapping[str, Any] | Iterable[Mapping[str, Any]], collection: str | None) -> Call:
        items = [dict(tickets)] if isinstance(tickets, Mapping) else [dict(t) for t in tickets]
        body = [{n: jsonable(v) for n, v in t.items()} for t in items]
        return Call("POST", f"{self.base(collection)}/tickets", UpsertResponse, json=body)

    def get(self, ticket_id: str, collection: str | None) -> Call:
        return Call("GET", f"{self.base(collection)}/tickets/{tid(ticket_id)}", TicketOut)

    def delete(self, ticket_id: str, collection: str | None) -> Call:
        return Call("DELETE", f"{self.base(collection)}/tickets/{tid(ticket_id)}", DeleteResponse)

    def feedback(self, ticket_id: str, candidate_id: str, label: str, by: str | None, collection: str | None) -> Call:
        body = {"ticket_id": ticket_id, "candidate_id": candidate_id, "label": label, "by": by}
        return Call("POST", f"{self.base(collection)}/feedback", FeedbackDecision,
                    json={k: v for k, v in body.items() if v is not None})

    def feedback_for(self, ticket_id: str, collection: str | None) -> Call:
        return Call("GET", f"{self.base(collection)}/tickets/{tid(ticket_id)}/feedback",
                    TypeAdapter(list[FeedbackDecision]))

    def collections(self) -> Call:
        return Call("GET", "/v1/collections", TypeAdapter(list[CollectionInfo]))

    def collection(self, name: str) -> Call:
        return Call("GET", f"/v1/collections/{quote(name, safe='')}", CollectionInfo)

    def create_collection(self, name: str, schema: str | Mapping[str, Any], general_model: bool,
                          shards: int | None = None, duplicate_precision: float | None = None) -> Call:
        body = {"schema": schema if isinstance(schema, str) else dict(schema), "general_model": general_model,
                **({"shards": shards} if shards is not None else {}),
                **({"duplicate_precision": duplicate_precision} if duplicate_precision is not None else {})}
        return Call("PUT", f"/v1/collections/{quote(name, safe='')}", CollectionInfo, json=body)

    def set_precision(self, name: str, duplicate_precision: float | None) -> Call:
        return Call("PATCH", f"/v1/collections/{quote(name, safe='')}", CollectionInfo,
                    json={"duplicate_precision": duplicate_precision})

    def delete_collection(self, name: str) -> Call:
        return Call("DELETE", f"/v1/collections/{quote(name, safe='')}", None)

    def train(self, collection: str | None, params: TrainParams | None) -> Call:
        name = collection if collection is not None else (self.default_collection or "default")
        body = (params or TrainParams()).model_dump(mode="json", exclude_none=True)
        return Call("POST", f"/v1/collections/{quote(name, safe='')}/train", JobInfo, json=body)

    def job(self, job_id: str, collection: str | None) -> Call:
        name = collection if collection is not None else (self.default_collection or "default")
        return Call("GET", f"/v1/collections/{quote(name, safe='')}/jobs/{quote(job_id, safe='')}", JobInfo)


class _Base:
    def __init__(self, url: str, key: str | None, timeout: float, retries: int, collection: str | None) -> None:
        if not url.startswith(("http://", "https://")):
            raise QueryError(f"--url must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout = timeout
        self.retries = retries
        self.calls = Calls(collection)

    def unreachable(self, exc: Exception) -> TicketsearchError:
        return TicketsearchError(f"{self.url}: cannot reach the service ({type(exc).__name__}: {exc})")

    def outcome(self, call: Call, response: httpx.Response, attempt: int) -> tuple[bool, Any]:
        """(done, value): the parsed answer, or (False, seconds to wait) for a 503 to retry; raises otherwise."""
        if response.status_code < 400:
            return True, call.result(response)
        error = error_for(self.url, response)
        if response.status_code == 503 and attempt < self.retries:
            return False, error.retry_after if error.retry_after is not None else 1.0
        raise error


class Client(_Base):
    """A blocking client. `retries`: how many times a 503 is retried (after its Retry-After) before it raises
    `Unavailable`. `collection`: the default for every method's `collection=`."""

    def __init__(self, url: str, key: str | None = None, timeout: float = 60.0, retries: int = 3,
                 collection: str | None = None) -> None:
        super().__init__(url, key, timeout, retries, collection)
        self._http = httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, call: Call) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, json=call.json, params=call.params)
            except httpx.HTTPError as exc:
                raise self.unreachable(exc) from None
            done, value = self.outcome(call, response, attempt)
            if done:
                return value
            attempt += 1
            time.sleep(value)

    def search(self, text: str | SearchRequest | None = None, *, collection: str | None = None,
               **options: Any) -> SearchResult:
        """As `TicketIndex.search`: `options` are the fields of `SearchRequest`, checked here by its rules."""
        req = SearchRequest.of(text, **options)
        return self.send(self.calls.search(req, collection))

    def similar(self, ticket_id: str, k: int = 10, collection: str | None = None,
                snippets: bool = False) -> SearchResult:
        """As `TicketIndex.similar`: a search like an indexed ticket (`SearchRequest(like=ticket_id)`)."""
        return self.search(like=ticket_id, k=k, snippets=snippets, collection=collection)

    def duplicates(self, ticket: Mapping[str, Any] | DuplicateRequest, k: int | None = None,
                   collection: str | None = None, snippets: bool | None = None) -> DuplicateResult:
        req = DuplicateRequest.of(ticket, k=k, snippets=snippets)
        return self.send(self.calls.duplicates(req, collection))

    def schema(self, collection: str | None = None) -> CollectionSchema:
        """The collection's fields with their known values."""
        return self.send(self.calls.schema(collection))

    def upsert(self, tickets: Mapping[str, Any] | Iterable[Mapping[str, Any]],
               collection: str | None = None) -> UpsertResponse:
        return self.send(self.calls.upsert(tickets, collection))

    def get(self, ticket_id: str, collection: str | None = None) -> TicketOut:
        return self.send(self.calls.get(ticket_id, collection))

    def delete(self, ticket_id: str, collection: str | None = None) -> DeleteResponse:
        return self.send(self.calls.delete(ticket_id, collection))

    def feedback(self, ticket_id: str, candidate_id: str, label: str, by: str | None = None,
                 collection: str | None = None) -> FeedbackDecision:
        return self.send(self.calls.feedback(ticket_id, candidate_id, label, by, collection))

    def feedback_for(self, ticket_id: str, collection: str | None = None) -> list[FeedbackDecision]:
        return self.send(self.calls.feedback_for(ticket_id, collection))

    def collections(self) -> list[CollectionInfo]:
        return self.send(self.calls.collections())

    def collection(self, name: str) -> CollectionInfo:
        return self.send(self.calls.collection(name))

    def create_collection(self, name: str, schema: str | Mapping[str, Any] = "support",
                          general_model: bool = False, shards: int | None = None,
                          duplicate_precision: float | None = None) -> CollectionInfo:
        return self.send(self.calls.create_collection(name, schema, general_model, shards, duplicate_precision))

    def set_precision(self, name: str, duplicate_precision: float | None) -> CollectionInfo:
        """A collection's target precision for its duplicate verdicts (None: the service's setting)."""
        return self.send(self.calls.set_precision(name, duplicate_precision))

    def delete_collection(self, name: str) -> None:
        self.send(self.calls.delete_collection(name))

    def train(self, collection: str | None = None, params: TrainParams | None = None) -> JobInfo:
        return self.send(self.calls.train(collection, params))

    def job(self, job_id: str, collection: str | None = None) -> JobInfo:
        return self.send(self.calls.job(job_id, collection))

    def wait(self, job: JobInfo, timeout: float = 3600.0, poll_s: float = 1.0) -> JobInfo:
        """Poll a job until it is done or failed (or `timeout` passes: the job as last seen)."""
        deadline = time.monotonic() + timeout
        while job.state in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(poll_s)
            job = self.job(job.id, collection=job.collection)
        return job


class AsyncClient(_Base):
    """The asyncio twin of `Client`: the same methods, awaited."""

    def __init__(self, url: str, key: str | None = None, timeout: float = 60.0, retries: int = 3,
                 collection: str | None = None) -> None:
        super().__init__(url, key, timeout, retries, collection)
        self._http = httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=timeout)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, call: Call) -> Any:
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, json=call.json, params=call.params)
            except httpx.HTTPError as exc:
                raise self.unreachable(exc) from None
            done, value = self.outcome(call, response, attempt)
            if done:
                return value
            attempt += 1
            await asyncio.sleep(value)

    async def search(self, text: str | SearchRequest | None = None, *, collection: str | None = None,
               **options: Any) -> SearchResult:
        """As `TicketIndex.search`: `options` are the fields of `SearchRequest`, checked here by its rules."""
        req = SearchRequest.of(text, **options)
        return await self.send(self.calls.search(req, collection))

    async def similar(self, ticket_id: str, k: int = 10, collection: str | None = None,
                      snippets: bool = False) -> SearchResult:
        """As `TicketIndex.similar`: a search like an indexed ticket (`SearchRequest(like=ticket_id)`)."""
        return await self.search(like=ticket_id, k=k, snippets=snippets, collection=collection)

    async def duplicates(self, ticket: Mapping[str, Any] | DuplicateRequest, k: int | None = None,
                   collection: str | None = None, snippets: bool | None = None) -> DuplicateResult:
        req = DuplicateRequest.of(ticket, k=k, snippets=snippets)
        return await self.send(self.calls.duplicates(req, collection))

    async def schema(self, collection: str | None = None) -> CollectionSchema:
        return await self.send(self.calls.schema(collection))

    async def upsert(self, tickets: Mapping[str, Any] | Iterable[Mapping[str, Any]],
                     collection: str | None = None) -> UpsertResponse:
        return await self.send(self.calls.upsert(tickets, collection))

    async def get(self, ticket_id: str, collection: str | None = None) -> TicketOut:
        return await self.send(self.calls.get(ticket_id, collection))

    async def delete(self, ticket_id: str, collection: str | None = None) -> DeleteResponse:
        return await self.send(self.calls.delete(ticket_id, collection))

    async def feedback(self, ticket_id: str, candidate_id: str, label: str, by: str | None = None,
                       collection: str | None = None) -> FeedbackDecision:
        return await self.send(self.calls.feedback(ticket_id, candidate_id, label, by, collection))

    async def feedback_for(self, ticket_id: str, collection: str | None = None) -> list[FeedbackDecision]:
        return await self.send(self.calls.feedback_for(ticket_id, collection))

    async def collections(self) -> list[CollectionInfo]:
        return await self.send(self.calls.collections())

    async def collection(self, name: str) -> CollectionInfo:
        return await self.send(self.calls.collection(name))

    async def create_collection(self, name: str, schema: str | Mapping[str, Any] = "support",
                                general_model: bool = False, shards: int | None = None,
                                duplicate_precision: float | None = None) -> CollectionInfo:
        return await self.send(self.calls.create_collection(name, schema, general_model, shards,
                                                            duplicate_precision))

    async def set_precision(self, name: str, duplicate_precision: float | None) -> CollectionInfo:
        return await self.send(self.calls.set_precision(name, duplicate_precision))

    async def delete_collection(self, name: str) -> None:
        await self.send(self.calls.delete_collection(name))

    async def train(self, collection: str | None = None, params: TrainParams | None = None) -> JobInfo:
        return await self.send(self.calls.train(collection, params))

    async def job(self, job_id: str, collection: str | None = None) -> JobInfo:
        return await self.send(self.calls.job(job_id, collection))

    async def wait(self, job: JobInfo, timeout: float = 3600.0, poll_s: float = 1.0) -> JobInfo:
        deadline = time.monotonic() + timeout
        while job.state in ("queued", "running") and time.monotonic() < deadline:
            await asyncio.sleep(poll_s)
            job = await self.job(job.id, collection=job.collection)
        return job


__all__ = ["AsyncClient", "BadRequest", "Client", "Conflict", "Forbidden", "NotFound", "PayloadTooLarge",
           "ServiceError", "Unauthorized", "Unavailable", "Unprocessable"]
