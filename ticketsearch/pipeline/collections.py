"""Many isolated collections in one process: `ROOT/collections/NAME/`, each a normal index directory.

```python
from ticketsearch.pipeline.collections import Collections
colls = Collections.at_root("var/ts", settings)        # or Collections.for_index("demo/index", settings)
colls.create("acme", "support")                         # an empty index with that schema
with colls.use("acme") as engine:                       # opened on first use, shared model weights
    engine.search(text="refund missing", k=5)
colls.close()
```

A collection is opened on first use and closed when idle for `idle_s` seconds; at most `max_open` are open at
once (the least recently used idle one closes first, after its checkpoint; the service passes its
`max_open_collections` and `collection_idle_s`). Closing loses nothing: DuckDB holds every write, and the
checkpoint saves the derived files. Every engine gets its encoder from one `SharedModels`, so the weights are
loaded once per model, not per collection.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ticketsearch.atomic import atomic_write_json, fsync_dir
from ticketsearch.errors import (
    CollectionNotFoundError,
    ConflictError,
    NotFoundError,
    QueryError,
    SchemaError,
    as_unavailable,
)
from ticketsearch.index_data.schema import Schema, builtin_schema_names, load_schema
from ticketsearch.index_data.store import TicketStore
from ticketsearch.index_dir import IndexDir
from ticketsearch.names import check_collection_name, is_collection_name
from ticketsearch.pipeline.engine import Engine
from ticketsearch.pipeline.ingest import build_index
from ticketsearch.pipeline.search import model_id, reranker_kind
from ticketsearch.pipeline.sharded import ShardedEngine
from ticketsearch.pipeline.sharding import ShardLayout, create_empty
from ticketsearch.pipeline.shared_models import SharedModels
from ticketsearch.rerank.general import GeneralReranker
from ticketsearch.rerank.persist import reranker_meta
from ticketsearch.results import CollectionInfo, RerankerKind, RerankerStatus
from ticketsearch.retrieval.manifest import Manifest
from ticketsearch.settings import Settings

log = logging.getLogger("ticketsearch.pipeline.collections")

DEFAULT = "default"
COLLECTION_FILE = "collection.json"  # a collection's own settings (its duplicate precision), in its folder
UNTRAINED = "no trained reranker yet: train one on the collection's duplicate links (POST /v1/collections/NAME/train)"


@functools.cache
def general_model_id() -> str:
    """The shipped general model's id (loaded once, not at every listing of collections)."""

    return model_id(GeneralReranker())


def not_found(name: str) -> str:
    """The one answer for a collection that does not exist and for one the caller may not see."""
    return f"collection {name!r} not found"


def _is_collection(path: Path) -> bool:
    """One index directory, or a sharded collection (`ticketsearch.pipeline.sharding`)."""

    return IndexDir(path).has_store() or ShardLayout.is_sharded(path)


def _shards(path: Path) -> Any:
    """A sharded collection's layout (None for one index directory)."""

    return ShardLayout.load(path) if ShardLayout.is_sharded(path) else None


def resolve_schema(schema: str | dict[str, Any]) -> Any:
    """A built-in schema by name, or an inline schema (the TOML layout as JSON). Raises SchemaError."""

    if isinstance(schema, str):
        if schema not in builtin_schema_names():
            raise SchemaError(f"schema {schema!r} is not a built-in schema ({', '.join(builtin_schema_names())}) "
                              "nor an inline schema object")
        return load_schema(schema)
    if isinstance(schema, dict):
        return Schema.from_dict(schema, origin="inline")
    raise SchemaError("schema must be a built-in schema's name or an inline schema object")


@dataclass
class Slot:
    name: str
    path: Path
    engine: Engine | None = None
    users: int = 0
    pins: int = 0  # training jobs: the collection stays open and cannot be deleted
    last_used: float = field(default_factory=time.monotonic)
    gate: threading.Lock = field(default_factory=threading.Lock)  # serialises opening and closing
    deleting: bool = False


class Collections:
    def __init__(self, settings: Settings, models: SharedModels, root: Path | None = None,
                 single: Path | None = None, connect_shards: Any = None, max_open: int = 20,
                 idle_s: float = 300.0) -> None:
        """Use `at_root` (a folder of collections) or `single` (one index directory as `default`).
        `connect_shards`: how a sharded collection reaches its shards (`pipeline.sharded.ShardedEngine`;
        default: in this process; the Ray service passes its Serve deployments)."""
        self.settings = settings
        self.connect_shards = connect_shards
        self.models = models
        self.root = Path(root) if root is not None else None
        self.single = Path(single) if single is not None else None
        self.max_open = max_open
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._create_lock = threading.Lock()
        self._slots: dict[str, Slot] = {}
        self._stop = threading.Event()
        self._janitor = threading.Thread(target=self._janitor_loop, name="collections-idle", daemon=True)
        self._janitor.start()

    @classmethod
    def at_root(cls, root: Path | str, settings: Settings, models: SharedModels | None = None, max_open: int = 20,
                idle_s: float = 300.0) -> Collections:
        root = Path(root)
        (root / "collections").mkdir(parents=True, exist_ok=True)
        return cls(settings, models or SharedModels(settings), root=root, max_open=max_open, idle_s=idle_s)

    @classmethod
    def for_index(cls, index_dir: Path | str, settings: Settings, models: SharedModels | None = None) -> Collections:
        """One index directory served as the collection `default` (it never closes when idle)."""
        return cls(settings, models or SharedModels(settings), single=Path(index_dir))

    # ---- where collections are -------------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        assert self.root is not None
        return self.root / "collections"

    def path(self, name: str) -> Path:
        if self.single is not None:
            if name != DEFAULT:
                raise CollectionNotFoundError(not_found(name))
            return self.single
        return self.folder / check_collection_name(name)

    def exists(self, name: str) -> bool:
        try:
            return _is_collection(self.path(name))
        except (NotFoundError, QueryError):
            return False

    def names(self) -> list[str]:
        if self.single is not None:
            return [DEFAULT]
        return sorted(p.name for p in self.folder.iterdir() if is_collection_name(p.name) and _is_collection(p))

    # ---- create, describe, delete ----------------------------------------------------------------------
    def create(self, name: str, schema: str | dict[str, Any], general_model: bool = False,
               shards: int | None = None, duplicate_precision: float | None = None) -> CollectionInfo:
        """An empty collection with this schema. Its search keeps first-stage order until a model is trained
        (`general_model`: rerank with the shipped general model meanwhile). `shards`: split into that many
        shards by a hash of the ticket id (`ticketsearch.pipeline.sharding`). ConflictError if it exists."""

        if self.root is None:
            raise ConflictError("this service serves one index (--index); start it with --root DIR to create "
                                "collections")
        check_collection_name(name)
        spec = resolve_schema(schema)
        with self._create_lock:
            if self.exists(name):
                raise ConflictError(f"collection {name!r} already exists")
            tmp = Path(tempfile.mkdtemp(prefix=f".creating-{name}-", dir=self.folder))
            try:
                loaded = self.models.load(self.settings.model)

                def build(d: IndexDir) -> None:
                    with TicketStore(d.store_path, schema=spec) as store:
                        build_index(d.root, store, loaded.batched, self.settings.model, self.settings,  # type: ignore[arg-type]  # BatchedEncoder has the Encoder methods a build uses
                                    progress=False)
                    if not general_model:
                        d.save_rerank_decision({
                            "install": False, "variant": None, "valid_mrr": None, "first_stage_valid_mrr": None,
                            "delta": None, "queries": 0, "use": "first_stage", "general_valid_mrr": None,
                            "reason": UNTRAINED.replace("NAME", name)})

                try:
                    if shards is None:
                        build(IndexDir(tmp))
                    else:

                        create_empty(tmp, shards, build)
                finally:
                    self.models.release(loaded)
                if duplicate_precision is not None:
                    atomic_write_json(tmp / COLLECTION_FILE, {"duplicate_precision": duplicate_precision})
                os.replace(tmp, self.folder / name)
                fsync_dir(self.folder)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        log.info("created collection %s (schema %s)", name, spec.name)
        return self.info(name)

    def info(self, name: str) -> CollectionInfo:

        path = self.path(name)
        if not _is_collection(path):
            raise CollectionNotFoundError(not_found(name))
        shards = _shards(path)
        with self._lock:
            slot = self._slots.get(name)
            engine = slot.engine if slot is not None and slot.engine is not None and slot.engine.ready else None
            training = bool(slot and slot.pins)
        first = shards.shard_dir(0).root if shards is not None else path
        manifest = Manifest.load(first)
        tickets = sum(Manifest.load(d.root).counts.get("tickets", 0) for d in shards.dirs()) if shards else \
            manifest.counts.get("tickets", 0)
        if engine is not None:
            try:
                tickets = engine.count()
            except Exception:  # noqa: BLE001 - closed meanwhile: the manifest's count stands
                pass
        return CollectionInfo(name=name, tickets=int(tickets), schema_name=manifest.schema,
                              model=manifest.model_name, reranker=self.reranker_status(first, engine),
                              open=engine is not None, training=training,
                              shards=shards.shards if shards is not None else None,
                              duplicate_precision=self.settings_of(path).duplicate_precision)

    def reranker_status(self, path: Path, engine: Engine | None = None) -> RerankerStatus:
        """What reranks the collection's searches: the open engine's model, else what its directory holds (by
        the search pipeline's own rule, without loading a model)."""

        d = IndexDir(path)
        decision = d.load_rerank_decision()
        reason = decision.get("reason") if decision else None
        if engine is not None and engine.searcher is not None:
            model = engine.searcher.reranker
            status: RerankerKind = ("none" if model is None else "general" if isinstance(model, GeneralReranker)
                                    else "trained")
            return RerankerStatus(status=status, model=model_id(model) if model else None, reason=reason)
        kind = reranker_kind(d, self.settings)
        if kind == "trained":
            meta = reranker_meta(d.reranker_path)
            return RerankerStatus(status="trained", model=f"{meta.get('name', 'reranker')}@{meta['checksum'][:12]}",
                                  reason=reason)
        if kind == "general":
            return RerankerStatus(status="general", model=general_model_id(), reason=reason)
        return RerankerStatus(status="none", reason=reason)

    def delete(self, name: str, wait_s: float = 30.0) -> None:
        """Close the collection (waiting up to `wait_s` for requests in progress) and remove its folder."""
        if self.root is None:
            raise ConflictError("this service serves one index (--index): it cannot delete it")
        path = self.path(name)
        with self._lock:
            if not _is_collection(path):
                raise CollectionNotFoundError(not_found(name))
            slot = self._slots.setdefault(name, Slot(name, path))
            if slot.pins:
                raise ConflictError(f"collection {name!r} has a job running (training or dedupe); delete it when "
                                    "the job ends")
            slot.deleting = True  # no new request gets it
        deadline = time.monotonic() + wait_s
        while True:
            with self._lock:
                busy = slot.users
            if not busy or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        with slot.gate:
            with self._lock:
                engine, slot.engine = slot.engine, None
            if engine is not None:
                engine.close(compact=False)
            remove = getattr(self.connect_shards, "remove", None)  # shards served elsewhere (Ray) stop first
            if remove is not None and _shards(path) is not None:
                remove(_shards(path))
            gone = Path(tempfile.mkdtemp(prefix=f".deleted-{name}-", dir=self.folder))
            os.replace(path, gone / name)
            fsync_dir(self.folder)
            with self._lock:
                self._slots.pop(name, None)
        shutil.rmtree(gone, ignore_errors=True)
        log.info("deleted collection %s", name)

    # ---- using one ---------------------------------------------------------------------------------------
    @contextmanager
    def use(self, name: str) -> Iterator[Engine]:
        engine = self.acquire(name)
        try:
            yield engine
        finally:
            self.release(name)

    def acquire(self, name: str) -> Engine:
        """The collection's engine, opened if need be; held (never closed) until `release(name)`."""
        path = self.path(name)
        with self._lock:
            slot = self._slots.get(name)
            if slot is None or slot.deleting:
                if slot is not None or not _is_collection(path):
                    raise CollectionNotFoundError(not_found(name))
                slot = self._slots[name] = Slot(name, path)
            slot.users += 1
            slot.last_used = time.monotonic()
            if slot.engine is not None:
                return slot.engine
        try:
            with slot.gate:
                if slot.engine is None:
                    self._make_room(slot)
                    slot.engine = self._open(slot)
                return slot.engine
        except BaseException:
            self.release(name)
            raise

    def release(self, name: str) -> None:
        with self._lock:
            slot = self._slots.get(name)
            if slot is not None:
                slot.users -= 1
                slot.last_used = time.monotonic()

    def pin(self, name: str) -> Engine:
        """Hold the collection open for a background job (it cannot be deleted meanwhile); `unpin` ends it."""
        engine = self.acquire(name)
        with self._lock:
            self._slots[name].pins += 1
        return engine

    def unpin(self, name: str) -> None:
        with self._lock:
            slot = self._slots.get(name)
            if slot is not None:
                slot.pins -= 1
        self.release(name)

    def settings_of(self, path: Path) -> Settings:
        """The settings a collection runs with: the service's, with the collection's own duplicate precision
        (`COLLECTION_FILE`, set at creation or by `set_precision`) where it has one."""
        try:
            own = json.loads((path / COLLECTION_FILE).read_text("utf-8"))
        except FileNotFoundError:
            return self.settings
        p = own.get("duplicate_precision")
        return self.settings if p is None else self.settings.model_copy(update={"duplicate_precision": float(p)})

    def set_precision(self, name: str, precision: float | None) -> CollectionInfo:
        """The collection's target precision for its duplicate verdicts (None: the service's setting), kept in
        its folder and used at once by an open collection."""
        path = self.path(name)
        if not _is_collection(path):
            raise CollectionNotFoundError(not_found(name))
        atomic_write_json(path / COLLECTION_FILE, {"duplicate_precision": precision})
        engine = self.engine_if_open(name)
        if engine is not None:
            engine.use_settings(self.settings_of(path))
        log.info("collection %s: duplicate precision %s", name, precision if precision is not None else "default")
        return self.info(name)

    def _open(self, slot: Slot) -> Engine:
        t0 = time.perf_counter()
        engine: Any
        settings = self.settings_of(slot.path)
        if _shards(slot.path) is not None:

            engine = ShardedEngine(slot.path, settings, self.models, self.connect_shards)
        else:
            engine = Engine(slot.path, settings, models=self.models)
        engine.start()
        if engine.failure is not None:
            engine.close(compact=False)
            raise as_unavailable(f"collection {slot.name!r} cannot be opened", engine.failure)
        log.info("opened collection %s in %.0f ms", slot.name, (time.perf_counter() - t0) * 1000)
        return engine

    def _make_room(self, opening: Slot) -> None:
        """Close least recently used idle collections until one more fits under `max_open`."""
        while True:
            with self._lock:
                open_slots = [s for s in self._slots.values() if s.engine is not None]
                if len(open_slots) < self.max_open:
                    return
                idle = sorted((s for s in open_slots if s is not opening and not s.users and not s.pins
                               and s.path != self.single), key=lambda s: s.last_used)
            if not idle:
                log.warning("%d collections open and all in use: opening %s beyond max_open_collections",
                            len(open_slots), opening.name)
                return
            if not any(self._close(s) for s in idle[:1]):
                time.sleep(0.001)

    def _close(self, slot: Slot) -> bool:
        """Close an idle collection (after its checkpoint); False if it is in use or being opened."""
        if not slot.gate.acquire(blocking=False):
            return False
        try:
            with self._lock:
                if slot.users or slot.pins or slot.engine is None:
                    return False
                engine, slot.engine = slot.engine, None
            engine.close(compact=False)
            log.info("closed collection %s", slot.name)
            return True
        finally:
            slot.gate.release()

    def open_names(self) -> list[str]:
        with self._lock:
            return sorted(n for n, s in self._slots.items() if s.engine is not None)

    def engine_if_open(self, name: str) -> Engine | None:
        with self._lock:
            slot = self._slots.get(name)
            return slot.engine if slot is not None else None

    def _janitor_loop(self) -> None:
        while not self._stop.wait(max(0.05, min(self.idle_s / 4, 5.0))):
            self.close_idle()

    def close_idle(self, older_than: float | None = None) -> int:
        """Close every collection idle for `older_than` seconds (default `collection_idle_s`)."""
        limit = self.idle_s if older_than is None else older_than
        now = time.monotonic()
        with self._lock:
            idle = [s for s in self._slots.values() if s.engine is not None and not s.users and not s.pins
                    and s.path != self.single and now - s.last_used >= limit]
        return sum(self._close(s) for s in idle)

    def close(self) -> None:
        self._stop.set()
        self._janitor.join(timeout=10)
        with self._lock:
            slots = list(self._slots.values())
        for slot in slots:
            with slot.gate:
                with self._lock:
                    engine, slot.engine = slot.engine, None
                if engine is not None:
                    engine.close()  # a clean stop: every overlay folded into its base
        self.models.close()
