"""A sharded collection: N complete index directories, a ticket in the one its id hashes to.

```
NAME/shards.json        {"shards": N, "hash": "blake2b-64"}
NAME/shard-000/         an index directory (its own DuckDB, FAISS, BM25 with term frequencies) + shard.json
NAME/shard-001/         ...
```

Row ids are unique across the shards and are the ones one index would give: a collection split from an index
keeps its row ids, and shard 0 numbers new tickets in arrival order (`ShardedEngine.upsert`; collections made
before this numbered each shard's own residue modulo N, which stays unique). A sharded search breaks ties by
them, as one index does (`pipeline.sharded`).

```python
from ticketsearch.pipeline.sharding import split_index
split_index("demo/index", "var/ts/collections/demo", shards=2)   # served by `ticketsearch serve --root var/ts`
```
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ticketsearch.atomic import atomic_write_json, fsync_dir
from ticketsearch.errors import ConflictError, QueryError, TicketsearchError
from ticketsearch.index_data import deliveries, feedback
from ticketsearch.index_data.records import text_hash
from ticketsearch.index_data.store import TicketStore
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.parts import load_manifest, open_encoder, open_store
from ticketsearch.retrieval.manifest import Manifest
from ticketsearch.settings import Settings

SHARDS_FILE = "shards.json"
HASH = "blake2b-64"
MAX_SHARDS = 64


def shard_of(ticket_id: str, shards: int) -> int:
    """The shard a ticket id belongs to: a stable hash (the same in every process and Python version)."""
    digest = hashlib.blake2b(ticket_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def check_shards(shards: int) -> int:
    if not 1 <= shards <= MAX_SHARDS:
        raise QueryError(f"shards must be between 1 and {MAX_SHARDS}, got {shards}")
    return shards


@dataclass(frozen=True)
class ShardLayout:
    """Where a sharded collection's shards are."""

    root: Path
    shards: int

    @staticmethod
    def is_sharded(path: Path) -> bool:
        return (Path(path) / SHARDS_FILE).is_file()

    @classmethod
    def load(cls, path: Path) -> ShardLayout:
        try:
            spec = json.loads((Path(path) / SHARDS_FILE).read_text())
            n = int(spec["shards"])
            if spec.get("hash") != HASH:
                raise ValueError(f"hash {spec.get('hash')!r}, expected {HASH!r}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TicketsearchError(f"{path}: unreadable {SHARDS_FILE} ({exc})") from None
        return cls(Path(path), check_shards(n))

    def shard_dir(self, i: int) -> IndexDir:
        return IndexDir(self.root / f"shard-{i:03d}")

    def dirs(self) -> list[IndexDir]:
        return [self.shard_dir(i) for i in range(self.shards)]

    def replica_dir(self, i: int, r: int) -> Path:
        """Read replica r (1, 2, ...) of shard i: a copy the primary makes (`pipeline.replica`)."""
        return self.root / "replicas" / f"shard-{i:03d}-r{r}"

    def owner(self, ticket_id: str) -> int:
        return shard_of(ticket_id, self.shards)


def _write_layout(root: Path, shards: int) -> None:
    for i in range(shards):
        d = root / f"shard-{i:03d}"
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_json(d / "shard.json", {"shard": i, "of": shards})
    atomic_write_json(root / SHARDS_FILE, {"shards": shards, "hash": HASH})


def split_index(src: Path | str, dest: Path | str, shards: int, settings: Settings,
                progress: bool = True) -> ShardLayout:
    """Split an index directory into a sharded collection at `dest` (which must not exist).

    Each shard gets its tickets (with their row ids), their cached embeddings and token states, the installed
    reranker and encoder, and the source's fusion; then its indexes are built from the cache (nothing is
    encoded again) and its candidate vectors computed with the same reranker.
    """
    from ticketsearch.pipeline.ingest import build_index  # deferred: torch, FAISS
    from ticketsearch.pipeline.rerank_vectors import refresh_rerank_vectors  # deferred: torch, FAISS

    check_shards(shards)
    source, dest = IndexDir(src), Path(dest)
    if dest.exists():
        raise ConflictError(f"{dest} exists already")
    source.require_store()
    manifest = load_manifest(source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".splitting-{dest.name}-", dir=dest.parent))
    try:
        _write_layout(tmp, shards)
        layout = ShardLayout(tmp, shards)
        with open_store(source, read_only=True) as store:
            tickets = store.export_table("tickets")
            cache = store.export_table("embedding_cache")
            schema = store.schema
            next_row = store.next_row_id  # shard 0 goes on numbering new tickets from here, as the index would
            kept = _kept_tables(store, shards)
        owner = np.array([shard_of(t, shards) for t in tickets.column("id").to_pylist()], np.int64)
        titles = tickets.column("title").to_pylist()
        hashes = tickets.column("text_hash").to_pylist()
        cache_hash = np.asarray(cache.column("text_hash").to_pylist(), dtype=object)
        encoder = open_encoder(source, settings, manifest)
        for i, d in enumerate(layout.dirs()):
            mine = owner == i
            part = tickets.filter(pa.array(mine))
            wanted = {h for h, m in zip(hashes, mine) if m} | {text_hash(t) for t, m in zip(titles, mine) if m}
            with TicketStore(d.store_path, schema=schema) as shard:
                shard.import_rows("tickets", part)
                keep = np.array([h in wanted for h in cache_hash], bool)
                shard.import_rows("embedding_cache", cache.filter(pa.array(keep)))
                shard.set_row_allocation(next_row, 1)
                for table, (ddl, rows, owners) in kept.items():
                    shard.import_rows(table, rows.filter(pa.array([i in o for o in owners])), ddl)
            for sub in ("reranker", "encoder"):
                if (source.root / sub).is_dir():
                    shutil.copytree(source.root / sub, d.root / sub)
            _copy_token_states(source, d, {h for h, m in zip(hashes, mine) if m})
            for f in (source.rerank_decision_path, source.tune_decision_path):
                if f.is_file():
                    shutil.copy2(f, d.root / f.name)
            d.derived.mkdir(parents=True, exist_ok=True)
            Manifest.load(source.root).save(d.root)  # the source's fusion and encoder facts, kept by the build
            with open_store(d, read_only=False) as shard:
                build_index(d.root, shard, encoder, manifest.model, settings, progress=progress)
                refresh_rerank_vectors(d, shard, encoder, progress=progress)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ShardLayout(dest, shards)


def _kept_tables(store: Any, shards: int) -> dict[str, tuple[str, pa.Table, list[set[int]]]]:
    """What the source keeps beside its tickets, with the shards each row goes to: agents' decisions
    (`index_data.feedback`) to the shard of each of the pair's tickets, as a sharded collection records them;
    answered webhook deliveries (`index_data.deliveries`) to the shard of the delivery id, where the front asks."""

    out: dict[str, tuple[str, pa.Table, list[set[int]]]] = {}
    if store.has_table("feedback"):
        rows = store.export_table("feedback")
        owners = [{shard_of(a, shards), shard_of(b, shards)}
                  for a, b in zip(rows.column("pair_a").to_pylist(), rows.column("pair_b").to_pylist())]
        out["feedback"] = (feedback.DDL, rows, owners)
    if store.has_table("hook_deliveries"):
        rows = store.export_table("hook_deliveries")
        out["hook_deliveries"] = (deliveries.DDL, rows,
                                  [{shard_of(d, shards)} for d in rows.column("delivery_id").to_pylist()])
    return out


def _copy_token_states(source: IndexDir, dest: IndexDir, wanted: set[str], shard_size: int = 2048) -> None:
    """The token states of the shard's own tickets, from each of the source's token caches (one per encoder)."""
    from ticketsearch.rerank.token_cache import TokenCache  # deferred: torch

    root = source.root / "rerank_tokens"
    if not root.is_dir():
        return
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        cache = TokenCache(folder)
        mine = sorted(h for h in wanted if h in cache)
        out = TokenCache(dest.root / "rerank_tokens" / folder.name)
        for s in range(0, len(mine), shard_size):
            part = [cache.get(h) for h in mine[s : s + shard_size]]
            out.put(mine[s : s + shard_size], [t.states for t in part], [t.ids for t in part])


def create_empty(dest: Path, shards: int, build_shard: Callable[[IndexDir], None]) -> ShardLayout:
    """An empty sharded collection: the layout, then `build_shard(index_dir)` makes each shard an empty index
    (the caller's way of building one: `Collections.create`)."""
    check_shards(shards)
    _write_layout(dest, shards)
    layout = ShardLayout(dest, shards)
    for d in layout.dirs():  # new tickets are numbered by shard 0 across the shards (ShardedEngine.upsert)
        build_shard(d)
    return layout
