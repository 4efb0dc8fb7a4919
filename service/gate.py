"""The service's ASGI layer below the routes: ticket ids in paths, the body-size limit, bounded admission and
request metrics. API keys are checked per route (`service.access`), not here."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, MutableMapping
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, unquote, unquote_to_bytes

import anyio
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from starlette.convertors import Convertor, register_url_convertor

from ticketsearch.service.settings import ServiceSettings

from .auth import CHALLENGE, ApiKeys, Unauthorized
from .metrics import Metrics
from .schemas import ID_PATTERN, MAX_ID

T = TypeVar("T")
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
TICKETS = re.compile(rb"^/v1/(?:collections/[^/]+/)?tickets/")
COLLECTION_LABEL = "ticketsearch.collection"  # the ASGI scope key the access check sets (metrics label)


class TicketIdConvertor(Convertor[str]):
    """A ticket id in a route is one path segment, percent-encoded: `/`, `#`, `?` and `%` in an id arrive as
    %2F, %23, %3F and %25. The Gate routes on the raw path (see ticket_path), so `GET /v1/tickets/a%2Fsimilar`
    is the ticket "a/similar" and `GET /v1/tickets/a/similar` the tickets similar to "a"."""

    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return unquote(value)

    def to_string(self, value: str) -> str:
        return quote(value, safe="")


register_url_convertor("ticket_id", TicketIdConvertor())
TicketIdParam = Annotated[str, PathParam(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN)]


def ticket_path(scope: dict) -> str:
    """The path to route on. The server's `path` is percent-decoded, which makes `a%2Fb` two segments; under
    /v1/tickets/ and /v1/collections/NAME/tickets/ the id's segment is taken from the raw path instead,
    decoded, and re-encoded whole."""
    raw: bytes | None = scope.get("raw_path")
    m = TICKETS.match(raw) if raw else None
    if raw is None or m is None:
        return scope["path"]
    segment, slash, rest = raw[m.end():].partition(b"/")
    tid = unquote_to_bytes(segment).decode("utf-8", "replace")
    tail = unquote_to_bytes(rest).decode("utf-8", "replace")
    return m.group(0).decode("latin-1") + quote(tid, safe="") + (("/" + tail) if slash else "")


class ApiError(Exception):
    def __init__(self, status: int, field: str, reason: str, headers: dict[str, str] | None = None,
                 type_: str = "error") -> None:
        super().__init__(reason)
        self.status, self.field, self.reason, self.headers, self.type = status, field, reason, headers or {}, type_


def header(scope: dict, name: bytes) -> str | None:
    """A request header's value (the first), decoded as Latin-1 as HTTP says; None when absent."""
    for key, value in scope.get("headers") or []:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def error_body(field: str, reason: str, type_: str = "error") -> dict[str, Any]:
    return {"detail": [{"field": field, "reason": reason, "type": type_}]}


HOOK_PATH = re.compile(r"^/v1/(collections/[^/]+/)?hooks/")  # signed by the tracker, not keyed
LOOPBACK_HOST = re.compile(r"^(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?$", re.I)


def foreign_host(scope: dict) -> str | None:
    """Without keys the service binds the loopback address only; a request whose Host is another name came
    through a page that had a name resolve to 127.0.0.1 (DNS rebinding), and is refused: the Host it gave, or
    None when it is a loopback name."""
    host = (header(scope, b"host") or "").strip()
    return None if LOOPBACK_HOST.match(host) else host


class Gate:
    """Pure ASGI middleware, in the order a request costs: for /v1 routes the caller's key is known (401 before
    anything else; hooks are signed and checked by their route), then the body is read within its size and time
    limits (413, 408), and only then is the request admitted (503 beyond the bound). An anonymous or stalled client
    never holds a slot. Request metrics for all. Each route's guard still checks the key's scope
    (`service.access`)."""

    def __init__(self, app: Any, max_body: int, metrics: Metrics, admission: Admission, keys: ApiKeys,
                 body_timeout_s: float) -> None:
        self.app, self.max_body, self.metrics = app, max_body, metrics
        self.admission, self.keys, self.body_timeout_s = admission, keys, body_timeout_s

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            scope["path"] = ticket_path(scope)
            if not self.keys.enabled and (host := foreign_host(scope)) is not None:
                await JSONResponse(error_body("header.host", f"this service (no API keys: loopback only) answers "
                                              f"requests for localhost, not {host[:100]!r}", "forbidden_host"), 400)(
                    scope, receive, send_wrapper)
                return
            api = scope["path"].startswith("/v1/")
            if api and not HOOK_PATH.match(scope["path"]):
                try:  # kept for the route's guard (`access.grants`), which does not ask again
                    scope.setdefault("state", {})["grants"] = self.keys.identify(header(scope, b"authorization"))
                except Unauthorized as exc:
                    await JSONResponse(error_body("header.authorization", exc.reason, "unauthorized"), 401,
                                       headers=CHALLENGE)(scope, receive, send_wrapper)
                    return
            body = await self._read(scope, receive, send_wrapper)
            if body is None:  # answered (413, 408) or the client went away
                return
            if not api:
                await self.app(scope, body, send_wrapper)
                return
            if not self.admission.enter():  # an overloaded service sheds at once
                await self.admission.shed_response()(scope, receive, send_wrapper)
                return
            try:
                await self.app(scope, body, send_wrapper)
            finally:
                self.admission.leave()
        finally:
            route = scope.get("route")
            name = getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
            # the collection only once the caller was let in (a guessed name never becomes a label)
            collection = scope.get(COLLECTION_LABEL, "")
            self.metrics.requests.labels(name, scope["method"], str(status["code"]), collection).inc()
            self.metrics.latency.labels(name, collection).observe(time.perf_counter() - start)

    async def _read(self, scope: dict, receive: Callable, send: Callable) -> Callable | None:
        """The request's `receive`, its body read in full here (a write) within `max_body` bytes (declared or
        streamed: 413) and `body_timeout_s` seconds (408); None when the answer was given or the client left."""
        length = header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._too_large(scope, receive, send)
            return None
        if scope["method"] not in WRITE_METHODS:
            return receive
        body, more = bytearray(), True
        with anyio.move_on_after(self.body_timeout_s) as deadline:
            while more:  # read the body here so that a chunked upload cannot exceed the limit either
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > self.max_body:
                    await self._too_large(scope, receive, send)
                    return None
        if deadline.cancelled_caught:
            await JSONResponse(error_body("body", f"the request body did not arrive within {self.body_timeout_s:g} "
                                          "seconds", "timeout"), 408, headers={"Connection": "close"})(
                scope, receive, send)
            return None
        done = False

        async def replay() -> dict:
            nonlocal done
            if not done:
                done = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return replay

    async def _too_large(self, scope: dict, receive: Callable, send: Callable) -> None:
        resp = JSONResponse(error_body("body", f"request body is larger than {self.max_body} bytes", "too_large"), 413)
        await resp(scope, receive, send)


class Admission:
    """Bounded admission: at most `max_pending` requests to /v1 routes are in the service (running or
    waiting); their model and index work runs in `workers` threads. Beyond the bound: 503 + Retry-After."""

    def __init__(self, settings: ServiceSettings, metrics: Metrics) -> None:
        self.limiter = anyio.CapacityLimiter(settings.workers)
        self.max_pending = settings.max_pending
        self.retry_after = str(settings.retry_after_s)
        self.metrics = metrics
        self.pending = 0  # touched only on the event loop

    def enter(self) -> bool:
        if self.pending >= self.max_pending:
            self.metrics.shed.inc()
            return False
        self.pending += 1
        self.metrics.in_flight.inc()
        return True

    def leave(self) -> None:
        self.pending -= 1
        self.metrics.in_flight.dec()

    def shed_response(self) -> JSONResponse:
        return JSONResponse(error_body("service", f"at capacity ({self.pending} requests in progress): retry later",
                                       "overloaded"), 503, headers={"Retry-After": self.retry_after})

    async def run(self, fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(fn, limiter=self.limiter)
