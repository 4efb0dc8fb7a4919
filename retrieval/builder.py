"""Build (or rebuild) the vector index of an index directory from its DuckDB store.

Embeddings are cached in the store by (model key, text hash), so a rebuild only encodes new or changed text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ticketsearch.atomic import atomic_write_json
from ticketsearch.errors import TicketsearchError
from ticketsearch.index_data.features import FeatureSpace
from ticketsearch.index_data.records import text_hash, ticket_text
from ticketsearch.index_data.store import StoreTexts, TicketStore, read_texts
from ticketsearch.index_dir import IndexDir
from ticketsearch.settings import Settings, get_settings

from .encoder import Encoder
from .lexical import BM25Index, bm25_text
from .manifest import Manifest, default_fusion
from .vector_index import VectorIndex

if TYPE_CHECKING:  # Ray is optional: imported only for --executor ray
    from .ray_encode import RayEncoding


@dataclass
class BuildReport:
    tickets: int
    encoded: int
    cached: int
    encode_seconds: float
    total_seconds: float
    index_kind: str

    @property
    def encode_rate(self) -> float:
        return self.encoded / self.encode_seconds if self.encode_seconds > 0 else 0.0


# StoreTexts and read_texts live with the store (index_data/store.py): storage owns its reads


def embed_texts(
    store: TicketStore, encoder: Encoder, key: str, texts: list[str], progress: bool, desc: str
) -> tuple[np.ndarray, int, float]:
    """Embeddings of `texts`, through the store's cache under `key`. Returns (vecs, encoded, seconds)."""
    hashes = [text_hash(t) for t in texts]
    unique = dict(zip(hashes, texts))
    cache = store.cached_embeddings(key, list(unique))
    missing = [h for h in unique if h not in cache]
    t0 = time.perf_counter()
    if missing:
        vecs = encoder.encode([unique[h] for h in missing], progress=progress, desc=desc)
        if not store.read_only:
            store.put_embeddings(key, missing, vecs)
        cache.update(zip(missing, vecs))
    seconds = time.perf_counter() - t0
    mat = np.zeros((len(hashes), encoder.dim), dtype=np.float32)
    for i, h in enumerate(hashes):
        mat[i] = cache[h]
    return mat, len(missing), seconds


def title_key(encoder: Encoder) -> str:
    return encoder.key + "|title"


def embed_store(
    store: TicketStore, encoder: Encoder, progress: bool = True, texts_: StoreTexts | None = None
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """(row ids, embeddings) of every stored ticket, encoding only texts missing from the cache.

    Returns (ids, vecs, number encoded, encode seconds).
    """
    st = texts_ or read_texts(store)
    texts = [ticket_text(store.schema, t, b) for t, b in zip(st.titles, st.bodies)]
    vecs, encoded, seconds = embed_texts(store, encoder, encoder.key, texts, progress, "encode")
    return st.row_ids, vecs, encoded, seconds


def build_dense(
    out: IndexDir, store: TicketStore, encoder: Encoder, kind: str, settings: Settings, progress: bool = True,
    texts: StoreTexts | None = None,
) -> tuple[VectorIndex, int, float]:
    """The full-text vector index (`vectors.faiss`). Returns (index, number encoded, encode seconds)."""
    ids, vecs, encoded, seconds = embed_store(store, encoder, progress, texts)
    vindex = VectorIndex.build(ids, vecs, kind=kind, settings=settings)
    vindex.save(out.vectors_path("text"))
    return vindex, encoded, seconds


def build_titles(
    out: IndexDir, store: TicketStore, encoder: Encoder, kind: str, settings: Settings, progress: bool = True,
    texts: StoreTexts | None = None,
) -> tuple[VectorIndex, int, float]:
    """The title-only vector index (`titles.faiss`)."""
    st = texts or read_texts(store)
    tvecs, encoded, seconds = embed_texts(store, encoder, title_key(encoder), st.titles, progress, "titles")
    tindex = VectorIndex.build(st.row_ids, tvecs, kind=kind, settings=settings)
    tindex.save(out.vectors_path("title"))
    return tindex, encoded, seconds


def build_bm25(out: IndexDir, store: TicketStore, texts: StoreTexts | None = None) -> BM25Index:
    st = texts or read_texts(store)
    bm25 = BM25Index.build(st.row_ids, [bm25_text(t, b) for t, b in zip(st.titles, st.bodies)], keep_tf=True)
    bm25.save(out.bm25_path)
    return bm25


def build_index(
    index_dir: Path,
    store: TicketStore,
    encoder: Encoder,
    model_spec: str,
    settings: Settings | None = None,
    progress: bool = True,
    remote: RayEncoding | None = None,
) -> BuildReport:
    """Embed every ticket, build the FAISS index and feature vocabularies, and write the manifest last.
    `remote`: first encode what the embedding cache lacks on Ray (`retrieval.ray_encode`), then build from the
    cache as always."""
    settings = settings or get_settings()
    start = time.perf_counter()
    seq = store.change_seq
    texts = read_texts(store)
    out = IndexDir(index_dir)
    remote_s, remote_n = 0.0, 0
    if remote is not None:
        full = [ticket_text(store.schema, t, b) for t, b in zip(texts.titles, texts.bodies)]
        t0 = time.perf_counter()
        done = remote.fill_cache(store, {encoder.key: full, title_key(encoder): texts.titles}, progress)
        remote_n = done[encoder.key]
        remote_s = time.perf_counter() - t0
    vindex, encoded, enc_s = build_dense(out, store, encoder, settings.index_type, settings, progress, texts)
    encoded += remote_n
    _, _, t_s = build_titles(out, store, encoder, vindex.kind, settings, progress, texts)
    enc_s += t_s + remote_s
    build_bm25(out, store, texts)
    features = FeatureSpace.fit(store.schema, store.field_rows())
    atomic_write_json(out.features_path, features.to_dict())
    fusion, extra = default_fusion(), {}
    try:
        before = Manifest.load(index_dir)
        fusion = before.fusion  # keep a tuned fusion across rebuilds
        if before.model_key == encoder.key:
            extra = before.extra  # and what is known of the same encoder (how it was tuned)
    except TicketsearchError:
        pass
    Manifest(
        model=model_spec,
        model_name=encoder.name,
        model_key=encoder.key,
        dim=encoder.dim,
        max_seq_length=encoder.max_seq_length,
        schema=store.schema.name,
        index_kind=vindex.kind,
        counts={"tickets": len(texts.row_ids), "vectors": vindex.ntotal, "features": features.dim},
        change_seq=seq,
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        fusion=fusion,
        extra=extra,
    ).save(index_dir)
    if remote is not None and out.has_reranker():  # its candidate vectors, from token states encoded on Ray
        from ticketsearch.pipeline.rerank_vectors import build_rerank_vectors, token_cache_for

        full = [ticket_text(store.schema, t, b) for t, b in zip(texts.titles, texts.bodies)]
        t0 = time.perf_counter()
        remote.fill_token_cache(token_cache_for(out, encoder), [text_hash(t) for t in full], full, progress)
        build_rerank_vectors(out, store, encoder, progress=progress)  # every token state cached: nothing encoded
        enc_s += time.perf_counter() - t0
    return BuildReport(
        tickets=len(texts.row_ids),
        encoded=encoded,
        cached=len(texts.row_ids) - encoded,
        encode_seconds=enc_s,
        total_seconds=time.perf_counter() - start,
        index_kind=vindex.kind,
    )


def index_model(index_dir: Path) -> str | None:
    """The model an existing index was built with (an index keeps its encoder, a tuned one included)."""
    try:
        return Manifest.load(index_dir).model
    except TicketsearchError:
        return None


def ingest_and_build(
    data: Path,
    index_dir: Path,
    schema_name: str | None,
    on_error: str = "skip",
    model: str | None = None,
    settings: Settings | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    fmt: str = "auto",
    mapping: Path | None = None,
    executor: str = "local",
    ray_address: str | None = None,
) -> tuple[TicketStore, Encoder, BuildReport]:
    """Upsert `data` into the index directory's store and rebuild its indexes. Returns the open store.

    `fmt`: `tickets`, a tracker (`jira`, `github`, `zendesk`), or `auto` (detected from the content, and said).
    A new index's schema defaults to the format's shipped one (`support` for our own files and Zendesk).
    `executor`: "local" encodes here; "ray" encodes on Ray (`ray_address`: None starts a local instance, "auto"
    or an address joins a cluster), the rest of the build as here."""
    from ticketsearch.index_data.ingest import ingest_file
    from ticketsearch.index_data.schema import load_schema
    from ticketsearch.index_data.trackers import SHIPPED_SCHEMA, detect

    settings = settings or get_settings()
    if fmt == "auto":
        fmt = detect(data)
        log(f"detected format: {fmt} ({data})")
    db = IndexDir(index_dir).store_path
    default = SHIPPED_SCHEMA.get(fmt, "support")
    schema = load_schema(schema_name) if schema_name else (None if db.exists() else load_schema(default))
    store = TicketStore(db, schema=schema)
    remote = None
    try:
        model_spec = model or index_model(index_dir) or settings.model
        if executor == "ray":
            from .ray_encode import RayEncoding

            remote = RayEncoding(model_spec, settings, address=ray_address)
            log(remote.describe())
        report = ingest_file(store, data, on_error=on_error, progress=progress, fmt=fmt, mapping=mapping,  # type: ignore[arg-type]  # on_error is checked by the CLI; ingest_file takes the Literal
                             executor=executor)
        for err in report.errors[:20]:
            log(f"skipped {data}: {err}")
        if len(report.errors) > 20:
            log(f"skipped {len(report.errors) - 20} more malformed rows")
        log(
            f"ingested {report.rows_read - len(report.errors)} of {report.rows_read} rows "
            f"({report.inserted} new, {report.updated} updated, {len(report.errors)} skipped) "
            f"in {report.seconds:.2f}s ({report.rows_per_second:,.0f} rows/s)"
            + (" read and validated on Ray" if remote is not None else "")
        )
        encoder = Encoder(model_spec, settings=settings)
        build = build_index(index_dir, store, encoder, model_spec, settings=settings, progress=progress,
                            remote=remote)
        rate = f" ({build.encode_rate:.1f} tickets/s)" if build.encoded else ""
        log(
            f"indexed {build.tickets} tickets with {encoder.name} ({build.index_kind}): encoded {build.encoded}"
            f"{rate}, reused {build.cached} cached, {build.total_seconds:.1f}s in all -> {index_dir}"
        )
    except BaseException:
        store.close()
        raise
    finally:
        if remote is not None:
            remote.close()
    return store, encoder, build
