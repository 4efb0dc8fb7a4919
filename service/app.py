"""The FastAPI query service: many collections, each with search, similar, duplicate check and live ticket
updates over HTTP; collections created, listed, deleted and trained over HTTP as well.

`ticketsearch serve --root DIR` serves every collection under `DIR/collections/NAME/`; `serve --index DIR`
serves one index directory as the collection `default`. Every ticket route exists per collection
(`/v1/collections/{name}/search`, ...) and, for `default`, without the prefix (`/v1/search`, ...).

Model and index work runs in worker threads (at most `workers` at once); at most `max_pending` requests are
admitted, and the rest get 503 with Retry-After at once instead of queueing without bound.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Body, Depends, FastAPI, Header, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ticketsearch.api import TicketIndex
from ticketsearch.errors import (
    CollectionNotFoundError,
    ConflictError,
    DiskFullError,
    JobNotFoundError,
    NotFoundError,
    QueryError,
    ReadOnlyError,
    RequestError,
    RowError,
    SchemaError,
    StoreError,
    TicketsearchError,
    UnavailableError,
    one_line,
)
from ticketsearch.index_data.records import normalize_row, sent_ticket
from ticketsearch.index_data.trackers import hook_field, hook_record
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.collections import DEFAULT, Collections
from ticketsearch.pipeline.engine import Engine
from ticketsearch.pipeline.jobs import TrainingJobs
from ticketsearch.pipeline.parts import open_store
from ticketsearch.pipeline.shared_models import SharedModels
from ticketsearch.requests import COSTLY_KINDS, error_message
from ticketsearch.results import (
    CollectionInfo,
    CollectionSchema,
    DedupeParams,
    DuplicateResult,
    FeedbackDecision,
    JobInfo,
    SearchResult,
    TicketOut,
    TrainParams,
)
from ticketsearch.retrieval.threads import apply_threads
from ticketsearch.service.settings import ServiceSettings, get_service_settings
from ticketsearch.settings import Settings

from .access import Access, CollectionName, Guard, require, require_default, require_global, require_key
from .auth import ApiKeys
from .costs import CostlyRequests
from .docs import add_docs_routes
from .gate import COLLECTION_LABEL, Admission, ApiError, Gate, TicketIdParam, error_body
from .hooks import github_ok, jira_ok, parse_secrets
from .metrics import Metrics
from .page import add_page_routes
from .schemas import (
    BATCH_TAGS,
    MAX_K,
    CollectionCreate,
    CollectionUpdate,
    DeleteResponse,
    DuplicateRequest,
    ErrorResponse,
    FeedbackRequest,
    Health,
    SearchRequest,
    TicketBatch,
    UpsertResponse,
    patch_openapi,
)

log = logging.getLogger("ticketsearch.service")
T = TypeVar("T")
# Fault injection for the client's retry tests (never a user setting): hold the service in its loading state
# (503 + Retry-After) for this many seconds.
START_DELAY_ENV = "TICKETSEARCH_TEST_START_DELAY_S"

Responses = dict[int | str, dict[str, Any]]
ERRORS: Responses = {
    code: {"model": ErrorResponse, "description": desc}
    for code, desc in {
        400: "Bad request", 401: "Missing or unknown API key", 403: "The key lacks the scope",
        413: "Request body too large", 422: "Invalid input (the body names each field and reason)",
        503: "Loading, or at capacity (see Retry-After)",
    }.items()
}
NOT_FOUND: Responses = {404: {"model": ErrorResponse, "description": "Unknown collection (or one the key may not "
                                                                      "see), or unknown ticket id"}}
CONFLICT: Responses = {
    409: {"model": ErrorResponse, "description": "A ticket named as its own duplicate (duplicate_of = id)"}}
EXISTS: Responses = {409: {"model": ErrorResponse, "description": "The collection exists already, or this service "
                                                                  "serves one index (--index)"}}
COSTLY: Responses = {429: {"model": ErrorResponse, "description": (
    f"A costly search ({COSTLY_KINDS}) while the key, or the service, has as many in progress as it may (see "
    "Retry-After)")}}
BUSY: Responses = {409: {"model": ErrorResponse, "description": "A training job is running on the collection"}}


class HookIgnored(BaseModel):
    ignored: str = Field(description="Why the webhook wrote nothing (another event or action).")


class Service:
    """What the routes share: the collections, the training jobs, metrics and admission."""

    def __init__(self, settings: Settings, web: ServiceSettings, index_dir: Path | None, root: Path | None,
                 connect_shards: Any = None, default_shards: int | None = None) -> None:
        """`settings`: the index's and models'; `web`: the service's own (keys, admission, collections held).
        `connect_shards`, `default_shards`: a Ray service's (`service.ray_app`): how sharded collections reach
        their shards, and how many shards a new collection gets unless its request says."""
        self.settings = settings
        self.web = web
        self.default_shards = default_shards
        # the server's own folders, never told to a client (`public`): longest first, as given and resolved
        served = [p for p in (index_dir, root) if p is not None]
        self._paths = sorted({s for p in served for s in (str(p), str(Path(p).resolve()))}, key=len, reverse=True)
        self.keys = ApiKeys.parse(web.api_keys)
        self.hook_secrets = parse_secrets(web.webhook_secrets)
        self.metrics = Metrics()
        self.models = SharedModels(settings, on_encode_batch=self.metrics.encode_batch.observe)
        if root is not None:
            self.collections = Collections.at_root(root, settings, self.models, max_open=web.max_open_collections,
                                                   idle_s=web.collection_idle_s)
            self.collections.connect_shards = connect_shards
        else:
            assert index_dir is not None
            self.collections = Collections.for_index(index_dir, settings, self.models)
        self.jobs = TrainingJobs(self.collections, settings, concurrency=web.training_jobs)
        self.admission = Admission(web, self.metrics)
        self.costly = CostlyRequests(web.costly_per_key, web.costly_total, web.retry_after_s, self.metrics)
        self.ready = False
        self.failure: Exception | None = None  # why start() failed (reported on /readyz and by check_ready)
        self._held: Any = None  # what start() holds for the process's life (the default engine, or the model)

    @property
    def single(self) -> bool:
        return self.collections.single is not None

    def start(self) -> None:
        """`--index`: open the index (reconciled with DuckDB) before /readyz says ready. `--root`: load the
        default model, so that the first request of each collection finds it loaded."""
        try:
            time.sleep(float(os.environ.get(START_DELAY_ENV, "0") or 0))
            if self.single:
                self._held = self.collections.acquire(DEFAULT)
            else:
                self._held = self.models.load(self.settings.model)
            self.ready = True
        except TicketsearchError as exc:
            self.failure = exc
            log.error("cannot serve: %s", exc)
        except Exception as exc:  # noqa: BLE001 - reported on /readyz instead of a silent dead thread
            self.failure = exc
            log.exception("cannot serve")

    def close(self) -> None:
        self.jobs.close()
        if self._held is not None and not self.single:
            self.models.release(self._held)
        self.collections.close()

    def public(self, text: str) -> str:
        """A message as a client may read it: the server's folders named by their role, not their path."""
        for path in self._paths:
            text = text.replace(path, "<served directory>")
        return text

    def check_ready(self) -> None:
        if self.failure is not None:
            raise ApiError(503, "index", self.public(f"the index could not be loaded: {one_line(self.failure)}"),
                           type_="unavailable")
        if not self.ready:
            raise ApiError(503, "index", "the index is loading", {"Retry-After": str(self.web.retry_after_s)},
                           "loading")

    @asynccontextmanager
    async def engine(self, name: str) -> AsyncIterator[Engine]:
        """The collection's engine, opened if need be (off the event loop), held for the request."""
        self.check_ready()
        try:
            engine = await anyio.to_thread.run_sync(self.collections.acquire, name)
        except UnavailableError as exc:
            raise ApiError(503, "collection", self.public(str(exc)), type_="unavailable") from None
        try:
            yield engine
        finally:
            self.collections.release(name)

    async def run(self, engine: Engine, fn: Callable[[Engine], T]) -> T:
        return await self.admission.run(lambda: fn(engine))


def create_app(index_dir: Path | None, settings: Settings, root: Path | None = None, connect_shards: Any = None,
               default_shards: int | None = None,
               web: ServiceSettings | None = None) -> FastAPI:
    """The service over one index directory (`index_dir`: the collection `default`) or over a root of
    collections (`root`). `settings`: the index's and models'; `web`: the service's own (default: from the
    environment). `connect_shards`, `default_shards`: see `Service` (the Ray service's front)."""
    web = web or get_service_settings()
    apply_threads(settings)  # the service's process: FAISS and torch thread counts
    svc = Service(settings, web, index_dir, root, connect_shards, default_shards)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        starter = threading.Thread(target=svc.start, name="service-start", daemon=True)
        starter.start()  # /healthz answers at once; /readyz turns 200 when the index (or the model) is loaded
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(starter.join)
            await anyio.to_thread.run_sync(svc.close)

    app = FastAPI(
        title="ticketsearch",
        version="0.2.0",
        summary="Search, similar-ticket and duplicate-check API over support and bug tickets, in collections.",
        lifespan=lifespan,
        docs_url=None,  # served by `add_docs_routes` from the package's own copy of Swagger UI
        redoc_url=None,
    )
    app.state.service = svc
    app.state.keys = svc.keys
    app.add_middleware(Gate, max_body=web.max_body_bytes, metrics=svc.metrics, admission=svc.admission,
                       keys=svc.keys, body_timeout_s=web.body_timeout_s)
    install_error_handlers(app)
    index_schema = read_schema(index_dir) if index_dir is not None else None

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            app.openapi_schema = patch_openapi(doc, index_schema) if index_schema else doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI documents replacing app.openapi

    # ---- health and metrics -------------------------------------------------------------------------------
    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """Alive (the process answers)."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, tags=["health"], responses={503: {"model": Health}})
    async def readyz() -> Any:
        """Ready: with --index, the index loaded and reconciled with DuckDB; with --root, the model loaded."""
        if svc.failure is not None:
            return JSONResponse(Health(status="failed", detail=svc.public(one_line(svc.failure))).model_dump(), 503)
        if not svc.ready:
            return JSONResponse(Health(status="loading").model_dump(), 503,
                                headers={"Retry-After": str(web.retry_after_s)})
        for name in svc.collections.open_names():  # writes that cannot be made (a full disk) make it not ready
            eng = svc.collections.engine_if_open(name)
            problem = await anyio.to_thread.run_sync(eng.write_blocked) if eng is not None else None
            if problem is not None:
                return JSONResponse(Health(status="read-only", detail=f"collection {name!r}: {problem}").model_dump(),
                                    503, headers={"Retry-After": str(web.retry_after_s)})
        if svc.single:
            engine = svc._held
            return Health(status="ready", tickets=await anyio.to_thread.run_sync(engine.count))
        return Health(status="ready")

    @app.get("/metrics", tags=["health"], dependencies=[Security(require_global("read"))],
             responses={**ERRORS, 200: {"content": {"text/plain": {}}}})
    async def get_metrics() -> Response:
        """Prometheus metrics, labelled by collection: requests and latency per route, latency per search stage.
        Needs a key with read scope on every collection."""
        svc.metrics.open_collections.set(len(svc.collections.open_names()))
        return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # ---- collections --------------------------------------------------------------------------------------
    @app.get("/v1/collections", response_model=list[CollectionInfo], tags=["collections"],
             dependencies=[Security(require_key())], responses=ERRORS)
    async def list_collections(request: Request) -> list[CollectionInfo]:
        """The collections this key may see, with their ticket counts, schema, model and reranker status."""
        access: Access = request.state.access
        names = [n for n in svc.collections.names() if access.grants.sees(n)]
        out = []
        for n in names:
            try:
                out.append(await anyio.to_thread.run_sync(svc.collections.info, n))
            except NotFoundError:  # deleted meanwhile
                continue
        return out

    @app.put("/v1/collections/{name}", response_model=CollectionInfo, status_code=201, tags=["collections"],
             dependencies=[Security(require("admin", must_exist=False))],
             responses={**ERRORS, **NOT_FOUND, **EXISTS})
    async def create_collection(name: str, body: CollectionCreate) -> CollectionInfo:
        """Create an empty collection with a built-in or inline schema (admin)."""
        svc.check_ready()
        try:
            return await anyio.to_thread.run_sync(
                lambda: svc.collections.create(name, body.schema_spec(), general_model=body.general_model,
                                               shards=body.shards or svc.default_shards,
                                               duplicate_precision=body.duplicate_precision))
        except SchemaError as exc:
            raise ApiError(422, "body.schema", str(exc), type_="value_error") from None

    @app.get("/v1/collections/{name}", response_model=CollectionInfo, tags=["collections"],
             dependencies=[Security(require("read"))], responses={**ERRORS, **NOT_FOUND})
    async def get_collection(name: str) -> CollectionInfo:
        return await anyio.to_thread.run_sync(svc.collections.info, name)

    @app.patch("/v1/collections/{name}", response_model=CollectionInfo, tags=["collections"],
               dependencies=[Security(require("admin"))], responses={**ERRORS, **NOT_FOUND})
    async def update_collection(name: str, body: CollectionUpdate) -> CollectionInfo:
        """Change a collection's settings (admin): its duplicate precision, used from the next request on."""
        return await anyio.to_thread.run_sync(svc.collections.set_precision, name, body.duplicate_precision)

    @app.delete("/v1/collections/{name}", status_code=204, tags=["collections"],
                dependencies=[Security(require("admin"))], responses={**ERRORS, **NOT_FOUND, **BUSY})
    async def delete_collection(name: str) -> Response:
        """Delete a collection and everything in it (admin); 409 while a job runs on it."""
        await anyio.to_thread.run_sync(svc.collections.delete, name)
        return Response(status_code=204)

    @app.post("/v1/collections/{name}/train", response_model=JobInfo, status_code=202, tags=["collections"],
              dependencies=[Security(require("admin"))], responses={**ERRORS, **NOT_FOUND, **BUSY})
    async def train(name: str, body: TrainParams | None = Body(default=None)) -> JobInfo:
        """Start a background job that trains the reranker on the collection's duplicate links and, when it
        validates, swaps it in without a restart (admin). Searches go on with the previous model meanwhile."""
        svc.check_ready()
        return await anyio.to_thread.run_sync(lambda: svc.jobs.start(name, body or TrainParams()))

    @app.post("/v1/collections/{name}/dedupe", response_model=JobInfo, status_code=202, tags=["collections"],
              dependencies=[Security(require("admin"))], responses={**ERRORS, **NOT_FOUND, **BUSY})
    async def dedupe(name: str, body: DedupeParams | None = Body(default=None)) -> JobInfo:
        """Start a background job that dedupes the collection's backlog (admin): each ticket (since a date)
        against the earlier ones, the pairs at the threshold for the target precision, grouped into clusters
        (GET .../jobs/{job_id}/clusters)."""
        svc.check_ready()
        return await anyio.to_thread.run_sync(lambda: svc.jobs.start(name, body or DedupeParams()))

    @app.get("/v1/collections/{name}/jobs/{job_id}/clusters", tags=["collections"],
             dependencies=[Security(require("read"))],
             responses={**ERRORS, **NOT_FOUND, 200: {"content": {"application/x-ndjson": {}}}})
    async def dedupe_clusters(name: str, job_id: str) -> Response:
        """A finished dedupe job's clusters, one JSON object a line (`{cluster, members, links}`)."""
        path = svc.jobs.clusters_path(name, job_id)
        if not path.is_file():
            raise ApiError(404, "path.job_id", f"no clusters for job {job_id[:40]!r} (not a finished dedupe job)",
                           type_="not_found")
        return Response(await anyio.to_thread.run_sync(path.read_bytes), media_type="application/x-ndjson")

    @app.get("/v1/collections/{name}/jobs/{job_id}", response_model=JobInfo, tags=["collections"],
             dependencies=[Security(require("read"))], responses={**ERRORS, **NOT_FOUND})
    async def get_job(name: str, job_id: str) -> JobInfo:
        """A job's state, progress, validation figures and result."""
        return await anyio.to_thread.run_sync(svc.jobs.get, name, job_id)

    # ---- ticket routes: per collection, and for `default` without the prefix ------------------------------
    for prefix, guard, tag in (("/v1/collections/{name}", require, "collection tickets"),
                               ("/v1", require_default, "default collection")):
        add_ticket_routes(app, svc, prefix, guard, tag)
    add_page_routes(app, svc.keys, web.retry_after_s)  # the agent page at / (service/page.py)
    add_docs_routes(app)  # /docs, offline (service/docs.py)
    return app


def add_ticket_routes(app: FastAPI, svc: Service, prefix: str, guard: Callable[[str], Guard], tag: str) -> None:
    """The ticket routes of one collection under `prefix` (routes of the app itself, so that each request's
    route, its metrics label and its Allow header are the full path)."""
    router = APIRouter(prefix=prefix, tags=[tag])
    read, write = [Security(guard("read"))], [Security(guard("write"))]

    def collection(request: Request) -> str:
        access: Access = request.state.access
        assert access.collection is not None
        return access.collection

    def caller(request: Request) -> str:
        """Whose budget of costly requests this one uses: its key, or its address when keys are off."""
        access: Access = request.state.access
        return access.grants.who or f"address {request.client.host if request.client else '?'}"

    @router.post("/search", response_model=SearchResult, dependencies=read,
                 responses={**ERRORS, **NOT_FOUND, **COSTLY})
    async def search(request: Request, req: SearchRequest) -> SearchResult:
        """Tickets like the query text (or like an indexed ticket: `like`), filtered, then reranked with the
        trained model when there is one."""
        name = collection(request)
        async with svc.engine(name) as eng, svc.costly.hold(caller(request), await costly(eng, req)):
            res = await svc.run(eng, lambda e: e.run(req))
        svc.metrics.observe_stages(res.timings_ms, name)
        return res

    async def costly(eng: Engine, req: SearchRequest) -> bool:
        """`SearchRequest.costly`, a `like` ticket's text measured first (one read of the ticket: a search like a
        long ticket reads all of it, as a long query would; NotFoundError answers 404 as the search would)."""
        like = req.like
        if like is None or req.costly():  # no ticket to measure, or costly whatever its length
            return req.costly()
        got = await svc.run(eng, lambda e: e.get(like))
        return req.costly(like_chars=len(got["title"]) + len(got["body"] or ""))

    @router.get("/tickets/{ticket_id:ticket_id}/similar", response_model=SearchResult, dependencies=read,
                responses={**ERRORS, **NOT_FOUND, **COSTLY})
    async def similar(request: Request, ticket_id: TicketIdParam,
                      k: int = Query(default=10, ge=1, le=MAX_K),
                      snippets: bool = Query(default=False, description="Each hit carries a passage of its body and "
                                             "the words that match the ticket.")) -> SearchResult:
        """Tickets similar to an indexed ticket (never the ticket itself)."""
        name = collection(request)
        req = SearchRequest(like=ticket_id, k=k, snippets=snippets)
        async with svc.engine(name) as eng, svc.costly.hold(caller(request), await costly(eng, req)):
            res = await svc.run(eng, lambda e: e.run(req))
        svc.metrics.observe_stages(res.timings_ms, name)
        return res

    @router.get("/schema", response_model=CollectionSchema, dependencies=read, responses={**ERRORS, **NOT_FOUND})
    async def schema(request: Request) -> CollectionSchema:
        """The collection's fields (name and kind) with the values its tickets hold, most frequent first: what a
        form for a new ticket offers."""
        async with svc.engine(collection(request)) as eng:
            return await svc.run(eng, lambda e: e.schema_info())

    @router.post("/duplicates", response_model=DuplicateResult, dependencies=read,
                 responses={**ERRORS, **NOT_FOUND, **COSTLY})
    async def duplicates(request: Request, req: DuplicateRequest) -> DuplicateResult:
        """Is this new ticket a duplicate of an indexed one? Uses the reranker's calibrated probability; before
        the collection has a model, `is_duplicate` and `probability` are null and `reason` says why."""
        async with svc.costly.hold(caller(request), req.costly()), svc.engine(collection(request)) as eng:
            index = TicketIndex.of_engine(eng)
            return await svc.run(eng, lambda e: index.duplicates(req))

    @router.post("/tickets", response_model=UpsertResponse, dependencies=write,
                 responses={**ERRORS, **NOT_FOUND, **CONFLICT})
    async def upsert(request: Request, body: TicketBatch) -> UpsertResponse:
        """Insert or replace tickets by id (one ticket or a list). Searchable as soon as this returns 200."""
        async with svc.engine(collection(request)) as eng:
            tickets = checked_tickets(eng, body)
            res = await svc.run(eng, lambda e: e.upsert(tickets))
        return UpsertResponse(inserted=res.inserted, updated=res.updated, ids=res.ids, change_seq=res.change_seq,
                              stale=res.stale, repeated=res.repeated)

    @router.get("/tickets/{ticket_id:ticket_id}", response_model=TicketOut, dependencies=read,
                responses={**ERRORS, **NOT_FOUND})
    async def get_ticket(request: Request, ticket_id: TicketIdParam) -> TicketOut:
        async with svc.engine(collection(request)) as eng:
            return TicketOut(**await svc.run(eng, lambda e: e.get(ticket_id)))

    @router.post("/feedback", response_model=FeedbackDecision, dependencies=write, responses={**ERRORS, **NOT_FOUND})
    async def feedback(request: Request, body: FeedbackRequest) -> FeedbackDecision:
        """Record an agent's decision on a pair of tickets: "duplicate" or "not_duplicate" (the latest decision
        on a pair wins). Training uses confirmed pairs as positives and rejected ones as hard negatives."""
        async with svc.engine(collection(request)) as eng:
            d = await svc.run(eng, lambda e: e.record_feedback(body.ticket_id, body.candidate_id, body.label,
                                                               body.by))
        return FeedbackDecision.of(d)

    @router.get("/tickets/{ticket_id:ticket_id}/feedback", response_model=list[FeedbackDecision], dependencies=read,
                responses={**ERRORS, **NOT_FOUND})
    async def ticket_feedback(request: Request, ticket_id: TicketIdParam) -> list[FeedbackDecision]:
        """The decisions recorded on pairs holding this ticket, newest first."""
        async with svc.engine(collection(request)) as eng:
            found = await svc.run(eng, lambda e: e.feedback_for(ticket_id))
        return [FeedbackDecision.of(d) for d in found]

    @router.delete("/tickets/{ticket_id:ticket_id}", response_model=DeleteResponse, dependencies=write,
                   responses={**ERRORS, **NOT_FOUND})
    async def delete_ticket(request: Request, ticket_id: TicketIdParam) -> DeleteResponse:
        """Delete a ticket; it is never returned again."""
        async with svc.engine(collection(request)) as eng:
            seq = await svc.run(eng, lambda e: e.delete(ticket_id))
        return DeleteResponse(deleted=ticket_id, change_seq=seq)

    add_hook_routes(router, svc, named="{name}" in prefix)
    app.router.routes.extend(router.routes)


HOOK_RESPONSES: Responses = {
    202: {"model": HookIgnored, "description": "Not an issue created or updated: nothing was written"},
    401: {"model": ErrorResponse, "description": "Unsigned, wrongly signed, or no secret for this collection"},
    413: ERRORS[413], 422: ERRORS[422], 503: ERRORS[503]}


async def collection_name(name: CollectionName) -> str:
    """The route's collection name, documented and checked like every route's (no key: hooks are signed)."""
    return name


def add_hook_routes(router: APIRouter, svc: Service, named: bool) -> None:
    """`POST .../hooks/github` and `.../hooks/jira`: a tracker's issue-created and issue-updated webhooks upsert
    the ticket (mapped onto the collection's schema; fields it lacks are ignored) and answer with its duplicate
    check, the body of `/duplicates`. Authenticated by the tracker's signature or token (`service.hooks`), not by
    an API key. A delivery sent again gets the first answer back and writes nothing."""

    async def handle(request: Request, source: str, verified: Callable[[str | None, bytes], bool],
                     event: str | None, delivery: str | None) -> Any:
        name = request.path_params.get("name", DEFAULT)
        body = await request.body()
        if not verified(svc.hook_secrets.get(name), body):  # before anything else: a bad call learns nothing
            raise ApiError(401, "header.signature", f"the {source} webhook's signature or token does not verify "
                           "against this collection's secret", type_="unauthorized")
        request.scope[COLLECTION_LABEL] = name
        try:
            payload = json.loads(body)
            rec, why = hook_record(source, event, payload)
        except (ValueError, TypeError) as exc:
            raise ApiError(422, "body", f"not a {source} issue webhook: {exc}", type_="value_error") from None
        if rec is None:
            return JSONResponse(HookIgnored(ignored=why).model_dump(), 202)
        async with svc.engine(name) as eng:
            if delivery:
                before = await svc.run(eng, lambda e: e.delivery_answer(source, delivery))
                if before is not None:
                    return JSONResponse(before, 200, headers={"X-Ticketsearch-Replay": "true"})
            try:
                ticket = normalize_row(eng.store.schema, rec, 1, tracker=True)  # type: ignore[union-attr]  # the store is open once the engine is ready
            except RowError as exc:  # named where the tracker's payload holds it
                raise ApiError(422, hook_field(source, exc.field), exc.detail, type_="value_error") from None
            index = TicketIndex.of_engine(eng)

            def upsert_and_check(e: Engine) -> tuple[DuplicateResult, bool]:
                stale = bool(e.upsert([ticket]).stale)
                t: dict[str, Any] = {"title": ticket.title, "body": ticket.body, "created": ticket.created,
                                     "fields": ticket.values}
                if stale:  # an older version than the stored one changes nothing: the stored ticket's check
                    with suppress(NotFoundError):  # (a deleted ticket keeps its version)
                        t = e.get(ticket.id)
                fields = {k: v for k, v in t["fields"].items() if v is not None and k in e.store.schema.field_names}  # type: ignore[union-attr]
                return index.duplicates({"title": t["title"], "body": t["body"], "created": t["created"],
                                         "fields": fields}), stale

            res, stale = await svc.run(eng, upsert_and_check)
            answer = res.model_dump(mode="json")
            if delivery:
                await svc.run(eng, lambda e: e.remember_delivery(source, delivery, answer))
        return JSONResponse(answer, 200, headers={"X-Ticketsearch-Stale": "true"}) if stale else answer

    named_deps = [Depends(collection_name)] if named else []

    @router.post("/hooks/github", response_model=DuplicateResult, responses=HOOK_RESPONSES, dependencies=named_deps)
    async def github_hook(
        request: Request,
        x_github_event: Annotated[str | None, Header(max_length=100)] = None,
        x_github_delivery: Annotated[str | None, Header(max_length=200)] = None,
        x_hub_signature_256: Annotated[str | None, Header(max_length=200)] = None,
    ) -> Any:
        """GitHub's `issues` webhook (opened, edited, reopened, labeled, unlabeled, transferred), signed with the
        collection's secret (`X-Hub-Signature-256`); a repeated `X-GitHub-Delivery` is answered as before."""
        return await handle(request, "github", lambda secret, body: github_ok(secret, body, x_hub_signature_256),
                            x_github_event, x_github_delivery)

    @router.post("/hooks/jira", response_model=DuplicateResult, responses=HOOK_RESPONSES, dependencies=named_deps)
    async def jira_hook(
        request: Request,
        x_hub_signature: Annotated[str | None, Header(max_length=200)] = None,
        x_webhook_token: Annotated[str | None, Header(max_length=500)] = None,
        x_atlassian_webhook_identifier: Annotated[str | None, Header(max_length=200)] = None,
    ) -> Any:
        """Jira's `jira:issue_created` and `jira:issue_updated` webhooks, signed with the collection's secret
        (`X-Hub-Signature`) or carrying it (`X-Webhook-Token`); a repeated delivery id is answered as before."""
        return await handle(request, "jira",
                            lambda secret, body: jira_ok(secret, body, x_hub_signature, x_webhook_token),
                            None, x_atlassian_webhook_identifier)


def checked_tickets(eng: Engine, body: Any) -> list[Any]:
    """The request's tickets by the one rule of a ticket sent as JSON (`records.sent_ticket`, the library's and
    the client's rule too): 422 naming the field, or 409 for a self-duplicate."""
    assert eng.store is not None  # the store is open once the engine is ready
    items = body if isinstance(body, list) else [body]
    prefix = "body" if not isinstance(body, list) else "body.{i}"
    tickets = []
    for i, t in enumerate(items):
        try:
            tickets.append(sent_ticket(eng.store.schema, t, prefix.format(i=i), i + 1))
        except RequestError as exc:
            raise ApiError(409 if exc.type == "conflict" else 422, exc.field or "body", exc.reason,
                           type_=exc.type) from None
    return tickets


def read_schema(index_dir: Path):  # noqa: ANN201 - a Schema or None
    """The index's field schema, for the OpenAPI document (None if the store cannot be read now)."""

    try:
        with open_store(IndexDir(index_dir), read_only=True) as store:
            return store.schema
    except TicketsearchError:
        return None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.field, exc.reason, exc.type), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        items = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in field_path(tuple(e.get("loc", ())))) or "body"
            items.append({"field": loc, "reason": error_message(e), "type": str(e.get("type", "invalid"))})
        return JSONResponse({"detail": items}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not just those of the first route that matched it
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(error_body("path", str(exc.detail), "http"), exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        """Whatever no other handler answers: the JSON error shape, never a plain-text 500 (the details stay in
        the log: uvicorn logs the traceback)."""
        return JSONResponse(error_body("service", f"internal error ({type(exc).__name__}): the service log has the "
                                       "details", "internal"), 500)

    @app.exception_handler(TicketsearchError)
    async def core_error(request: Request, exc: TicketsearchError) -> JSONResponse:
        message = request.app.state.service.public(str(exc))
        if isinstance(exc, CollectionNotFoundError):  # the same body as access.check's for an unseen collection
            return JSONResponse(error_body("path.name", message, "not_found"), 404)
        if isinstance(exc, JobNotFoundError):
            return JSONResponse(error_body("path.job_id", message, "not_found"), 404)
        if isinstance(exc, ConflictError):
            return JSONResponse(error_body("path.name", message, "conflict"), 409)
        if isinstance(exc, UnavailableError):
            return JSONResponse(error_body("collection", message, "unavailable"), 503)
        if isinstance(exc, DiskFullError):
            return JSONResponse(error_body("storage", message, "disk_full"), 503,
                                headers={"Retry-After": str(request.app.state.service.web.retry_after_s)})
        if isinstance(exc, NotFoundError):
            return JSONResponse(error_body("path.ticket_id", message, "not_found"), 404)
        if isinstance(exc, (StoreError, ReadOnlyError)):  # the server's storage, not the request
            log.warning("request failed: %s", exc)
            return JSONResponse(error_body("storage", message, "unavailable"), 503)
        if isinstance(exc, RequestError):  # a rule of ticketsearch.requests, naming the field it concerns
            where = "body" + (f".{exc.field}" if exc.field else "")
            return JSONResponse(error_body(where, exc.reason, exc.type), 422)
        if isinstance(exc, QueryError):
            return JSONResponse(error_body("body", message, "value_error"), 422)
        log.warning("request failed: %s", exc)
        return JSONResponse(error_body("body", message, "error"), 400)


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
