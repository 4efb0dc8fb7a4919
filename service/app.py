"""The FastAPI query service: search, similar, duplicate check and live ticket updates over HTTP.

Model and index work runs in worker threads (at most `workers` at once); at most `max_pending` requests are
admitted, and the rest get 503 with Retry-After at once instead of queueing without bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, unquote, unquote_to_bytes

import anyio
from fastapi import FastAPI, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ticketsearch.api import TicketIndex
from ticketsearch.errors import NotFoundError, QueryError, RowError, TicketsearchError, UnavailableError
from ticketsearch.index_data.records import SELF_DUPLICATE, normalize_row
from ticketsearch.pipeline.engine import Engine
from ticketsearch.results import DuplicateResult, SearchResult
from ticketsearch.settings import Settings

from .auth import ApiKeys
from .metrics import Metrics
from .schemas import (
    BATCH_TAGS,
    ID_PATTERN,
    MAX_ID,
    MAX_K,
    NOT_BLANK,
    DeleteResponse,
    DuplicateRequest,
    ErrorResponse,
    Health,
    SearchRequest,
    TicketBatch,
    TicketOut,
    UpsertResponse,
    patch_openapi,
    value_problem,
)

log = logging.getLogger("ticketsearch.service")
T = TypeVar("T")

OPEN_PATHS = {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"}
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": desc}
    for code, desc in {
        400: "Bad request", 401: "Missing or unknown API key", 403: "The key lacks the scope",
        413: "Request body too large", 422: "Invalid input (the body names each field and reason)",
        503: "Loading, or at capacity (see Retry-After)",
    }.items()
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "Unknown ticket id"}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "A ticket named as its own duplicate (duplicate_of = id)"}}
bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer KEY` (read or write scope).")
TICKETS = b"/v1/tickets/"


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
    /v1/tickets/ the id's segment is taken from the raw path instead, decoded, and re-encoded whole."""
    raw = scope.get("raw_path")
    if not raw or not raw.startswith(TICKETS):
        return scope["path"]
    segment, slash, rest = raw[len(TICKETS):].partition(b"/")
    tid = unquote_to_bytes(segment).decode("utf-8", "replace")
    tail = unquote_to_bytes(rest).decode("utf-8", "replace")
    return "/v1/tickets/" + quote(tid, safe="") + (("/" + tail) if slash else "")


class ApiError(Exception):
    def __init__(self, status: int, field: str, reason: str, headers: dict[str, str] | None = None,
                 type_: str = "error") -> None:
        super().__init__(reason)
        self.status, self.field, self.reason, self.headers, self.type = status, field, reason, headers or {}, type_


def error_body(field: str, reason: str, type_: str = "error") -> dict[str, Any]:
    return {"detail": [{"field": field, "reason": reason, "type": type_}]}


def required_scope(method: str, path: str) -> str | None:
    """None for the open routes (health and API docs), else 'read' or 'write'."""
    if path in OPEN_PATHS:
        return None
    if method in WRITE_METHODS and path.startswith("/v1/tickets"):
        return "write"
    return "read"


class Gate:
    """Pure ASGI middleware: API keys, the body-size limit, and request metrics."""

    def __init__(self, app: Any, keys: ApiKeys, max_body: int, metrics: Metrics, admission: Admission) -> None:
        self.app, self.keys, self.max_body, self.metrics = app, keys, max_body, metrics
        self.admission = admission

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
            denied = self._check_auth(scope)
            if denied is not None:
                await denied(scope, receive, send_wrapper)
                return
            if scope["path"].startswith("/v1/"):
                # admission happens here, before the body is read: an overloaded service sheds at once
                if not self.admission.enter():
                    await self.admission.shed_response()(scope, receive, send_wrapper)
                    return
                try:
                    await self._handle(scope, receive, send_wrapper)
                finally:
                    self.admission.leave()
            else:
                await self._handle(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            name = getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(name, scope["method"], str(status["code"])).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - start)

    async def _handle(self, scope: dict, receive: Callable, send: Callable) -> None:
        """Refuse a body over the limit (declared or streamed) with 413, then pass the request on."""
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._too_large(scope, receive, send)
            return
        if scope["method"] not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        body, more = bytearray(), True
        while more:  # read the body here so that a chunked upload cannot exceed the limit either
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                await self._too_large(scope, receive, send)
                return
        done = False

        async def replay() -> dict:
            nonlocal done
            if not done:
                done = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _check_auth(self, scope: dict) -> JSONResponse | None:
        needed = required_scope(scope["method"], scope["path"])
        if needed is None or not self.keys.enabled:
            return None
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        challenge = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != "bearer" or not token.strip():
            return JSONResponse(error_body("header.authorization", "an API key is required: Authorization: Bearer KEY",
                                           "unauthorized"), 401, headers=challenge)
        scope_of = self.keys.scope_of(token.strip())
        if scope_of is None:
            return JSONResponse(error_body("header.authorization", "unknown API key", "unauthorized"), 401,
                                headers=challenge)
        if not self.keys.allows(scope_of, needed):
            return JSONResponse(error_body("header.authorization", f"this key has {scope_of} scope; "
                                           f"{needed} scope is needed", "forbidden"), 403)
        return None

    async def _too_large(self, scope: dict, receive: Callable, send: Callable) -> None:
        resp = JSONResponse(error_body("body", f"request body is larger than {self.max_body} bytes", "too_large"), 413)
        await resp(scope, receive, send)


class Admission:
    """Bounded admission: at most `max_pending` requests to /v1 routes are in the service (running or
    waiting); their model and index work runs in `workers` threads. Beyond the bound: 503 + Retry-After."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
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


def create_app(index_dir: Path, settings: Settings) -> FastAPI:
    keys = ApiKeys.parse(settings.api_keys)
    metrics = Metrics()
    engine = Engine(index_dir, settings, on_encode_batch=metrics.encode_batch.observe)
    admission = Admission(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        starter = threading.Thread(target=engine.start, name="engine-start", daemon=True)
        starter.start()  # /healthz answers at once; /readyz turns 200 when the index is loaded and reconciled
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(starter.join)
            await anyio.to_thread.run_sync(engine.close)

    app = FastAPI(
        title="ticketsearch",
        version="0.1.0",
        summary="Search, similar-ticket and duplicate-check API over support and bug tickets.",
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.metrics = metrics
    app.add_middleware(Gate, keys=keys, max_body=settings.max_body_bytes, metrics=metrics, admission=admission)
    install_error_handlers(app)
    auth = [Security(bearer)]
    index_schema = read_schema(index_dir)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            app.openapi_schema = patch_openapi(doc, index_schema) if index_schema else doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI documents replacing app.openapi

    def ready_engine() -> Engine:
        if engine.error is not None:
            raise ApiError(503, "index", f"the index could not be loaded: {engine.error}", type_="unavailable")
        if not engine.ready:
            raise ApiError(503, "index", "the index is loading", {"Retry-After": str(settings.retry_after_s)},
                           "loading")
        return engine

    async def work(fn: Callable[[Engine], T]) -> T:
        eng = ready_engine()
        return await admission.run(lambda: fn(eng))

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """Alive (the process answers)."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, tags=["health"], responses={503: {"model": Health}})
    async def readyz() -> Any:
        """Ready: model and index loaded, and the index reconciled with DuckDB."""
        if engine.error is not None:
            return JSONResponse(Health(status="failed", detail=engine.error).model_dump(), 503)
        if not engine.ready:
            return JSONResponse(Health(status="loading").model_dump(), 503,
                                headers={"Retry-After": str(settings.retry_after_s)})
        return Health(status="ready", tickets=await anyio.to_thread.run_sync(engine.count))

    @app.get("/metrics", tags=["health"], dependencies=auth, responses={**ERRORS, 200: {"content": {"text/plain": {}}}})
    async def get_metrics() -> Response:
        """Prometheus metrics: requests and latency per route; latency per search stage."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/v1/search", response_model=SearchResult, tags=["search"], dependencies=auth, responses=ERRORS)
    async def search(req: SearchRequest) -> SearchResult:
        """Tickets like the query text, filtered, then reranked with the trained model when there is one."""
        eng = ready_engine()
        fields = query_fields(eng, req.fields, "body.fields")
        filters = filter_values(eng, req.filters)
        res = await work(lambda e: e.search(
            text=req.text, title=req.title, fields=fields, filters=filters, before=req.created_before,
            after=req.created_after, k=req.k, method=req.method, rerank=req.rerank, explain=req.explain))
        metrics.observe_stages(res.timings_ms)
        return res

    @app.get("/v1/tickets/{ticket_id:ticket_id}/similar", response_model=SearchResult, tags=["search"],
             dependencies=auth, responses={**ERRORS, **NOT_FOUND})
    async def similar(
        ticket_id: TicketIdParam,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    ) -> SearchResult:
        """Tickets similar to an indexed ticket (never the ticket itself)."""
        res = await work(lambda e: e.search(like=ticket_id, k=k))
        metrics.observe_stages(res.timings_ms)
        return res

    @app.post("/v1/duplicates", response_model=DuplicateResult, tags=["search"], dependencies=auth,
              responses=ERRORS)
    async def duplicates(req: DuplicateRequest) -> DuplicateResult:
        """Is this new ticket a duplicate of an indexed one? Uses the reranker's calibrated probability."""
        eng = ready_engine()
        index = TicketIndex.of_engine(eng)
        try:
            index.duplicate_threshold()  # refuse before any work when the model cannot answer
        except UnavailableError as exc:
            raise ApiError(503, "index", str(exc), type_="unavailable") from None
        fields = query_fields(eng, req.fields, "body.fields")
        ticket = {"title": req.title, "body": req.body, "created": req.created, "fields": fields}
        return await work(lambda e: index.duplicates(ticket, k=req.k))

    @app.post("/v1/tickets", response_model=UpsertResponse, tags=["tickets"], dependencies=auth,
              responses={**ERRORS, **CONFLICT})
    async def upsert(
        body: TicketBatch,
    ) -> UpsertResponse:
        """Insert or replace tickets by id (one ticket or a list). Searchable as soon as this returns 200."""
        eng = ready_engine()
        items = body if isinstance(body, list) else [body]
        prefix = "body" if not isinstance(body, list) else "body.{i}"
        schema = eng.store.schema if eng.store else None
        tickets = []
        for i, t in enumerate(items):
            where = prefix.format(i=i)
            query_fields(eng, t.fields, f"{where}.fields")
            raw = {"id": t.id, "title": t.title, "body": t.body, "created": t.created.isoformat(),
                   "duplicate_of": t.duplicate_of, "fields": {k: v for k, v in t.fields.items() if v is not None}}
            try:
                tickets.append(normalize_row(schema, raw, i + 1))  # type: ignore[arg-type]  # the store is open once the engine is ready
            except RowError as exc:
                if exc.reason == SELF_DUPLICATE:  # well formed, but in conflict with the ticket's own id
                    raise ApiError(409, f"{where}.duplicate_of", exc.reason, type_="conflict") from None
                raise ApiError(422, where, exc.reason, type_="value_error") from None
        res = await work(lambda e: e.upsert(tickets))
        return UpsertResponse(inserted=res.inserted, updated=res.updated, ids=res.ids, change_seq=res.change_seq)

    @app.get("/v1/tickets/{ticket_id:ticket_id}", response_model=TicketOut, tags=["tickets"], dependencies=auth,
             responses={**ERRORS, **NOT_FOUND})
    async def get_ticket(ticket_id: TicketIdParam) -> TicketOut:
        return TicketOut(**await work(lambda e: e.get(ticket_id)))

    @app.delete("/v1/tickets/{ticket_id:ticket_id}", response_model=DeleteResponse, tags=["tickets"],
                dependencies=auth, responses={**ERRORS, **NOT_FOUND})
    async def delete_ticket(ticket_id: TicketIdParam) -> DeleteResponse:
        """Delete a ticket; it is never returned again."""
        seq = await work(lambda e: e.delete(ticket_id))
        return DeleteResponse(deleted=ticket_id, change_seq=seq)

    return app


def read_schema(index_dir: Path):  # noqa: ANN201 - a Schema or None
    """The index's field schema, for the OpenAPI document (None if the store cannot be read now)."""
    from ticketsearch.index_dir import IndexDir

    try:
        with IndexDir(index_dir).open_store(read_only=True) as store:
            return store.schema
    except TicketsearchError:
        return None


def query_fields(eng: Engine, fields: dict[str, Any], where: str, is_filter: bool = False) -> dict[str, Any]:
    """Field names must be in the schema and values of the field's type (unseen values are fine: they use
    the out-of-vocabulary bucket). The same rules as the OpenAPI document."""
    schema = eng.store.schema if eng.store else None
    allowed = schema.field_names if schema else []
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ApiError(422, f"{where}.{unknown[0]}", f"unknown field {unknown[0]!r}; allowed: "
                       f"{', '.join(allowed) or '(none)'}", type_="unknown_field")
    for name, value in fields.items():
        problem = value_problem(schema.field(name), value, is_filter)  # type: ignore[union-attr]  # the store is open once the engine is ready
        if problem:
            raise ApiError(422, f"{where}.{name}", problem, type_="value_error")
    return {k: v for k, v in fields.items() if v is not None}


def filter_values(eng: Engine, filters: dict[str, Any]) -> dict[str, list[Any]]:
    return {name: v if isinstance(v, list) else [v]
            for name, v in query_fields(eng, filters, "body.filters", is_filter=True).items()}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.field, exc.reason, exc.type), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        items = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in field_path(tuple(e.get("loc", ())))) or "body"
            msg = str(e.get("msg", "invalid"))
            if e.get("type") == "string_pattern_mismatch" and (e.get("ctx") or {}).get("pattern") == NOT_BLANK:
                msg = "must not be empty or whitespace only"
            items.append({"field": loc, "reason": msg, "type": str(e.get("type", "invalid"))})
        return JSONResponse({"detail": items}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not just those of the first route that matched it
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(error_body("path", str(exc.detail), "http"), exc.status_code, headers=headers)

    @app.exception_handler(TicketsearchError)
    async def core_error(request: Request, exc: TicketsearchError) -> JSONResponse:
        if isinstance(exc, NotFoundError):
            return JSONResponse(error_body("path.ticket_id", str(exc), "not_found"), 404)
        if isinstance(exc, QueryError):
            return JSONResponse(error_body("body", str(exc), "value_error"), 422)
        log.warning("request failed: %s", exc)
        return JSONResponse(error_body("body", str(exc), "error"), 400)


def field_path(loc: tuple) -> tuple:
    """An error's location in the request's own terms: the tag of the ticket-or-list union is dropped, so a
    field reads "body.created" (one ticket) or "body.3.created" (the 4th of a list)."""
    if len(loc) > 1 and loc[0] == "body" and loc[1] in BATCH_TAGS:
        return loc[:1] + loc[2:]
    return loc


def allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)
