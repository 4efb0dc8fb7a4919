"""The ingest workflow: tickets into an index directory's store, then every index built from it (dense, titles,
BM25, features, the manifest written last) and the installed reranker's vectors refreshed, in one step.

`ingest_and_build` is what `ticketsearch ingest` and `ticketsearch experiment` run; `build_index` rebuilds an
index from its store (a new collection, a split, a tuned encoder, an engine repairing its files).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ticketsearch.atomic import atomic_write_json
from ticketsearch.errors import IngestError, TicketsearchError
from ticketsearch.index_data.features import FeatureSpace
from ticketsearch.index_data.ingest import IngestReport, ingest_file
from ticketsearch.index_data.records import ticket_text
from ticketsearch.index_data.schema import load_schema
from ticketsearch.index_data.store import TicketStore, read_texts
from ticketsearch.index_data.trackers import SHIPPED_SCHEMA, detect
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.rerank_vectors import refresh_rerank_vectors
from ticketsearch.retrieval.builder import build_bm25, build_dense, build_titles, title_key
from ticketsearch.retrieval.encoder import Encoder
from ticketsearch.retrieval.manifest import Manifest, default_fusion
from ticketsearch.retrieval.quantized import prepare_query_encoder
from ticketsearch.retrieval.ray_encode import RayEncoding
from ticketsearch.settings import Settings

if TYPE_CHECKING:  # Ray is optional: imported only for --executor ray
    from ticketsearch.retrieval.ray_encode import RayEncoding


@dataclass
class BuildReport:
    tickets: int
    encoded: int
    cached: int
    encode_seconds: float
    total_seconds: float
    index_kind: str
    rerank_vectors: int = 0  # the installed reranker's candidate vectors computed after the build

    @property
    def encode_rate(self) -> float:
        return self.encoded / self.encode_seconds if self.encode_seconds > 0 else 0.0


# StoreTexts and read_texts live with the store (index_data/store.py): storage owns its reads


def build_index(
    index_dir: Path,
    store: TicketStore,
    encoder: Encoder,
    model_spec: str,
    settings: Settings,
    progress: bool = True,
    remote: RayEncoding | None = None,
) -> BuildReport:
    """Embed every ticket, build the FAISS index and feature vocabularies, and write the manifest last.
    `remote`: first encode what the embedding cache lacks on Ray (`retrieval.ray_encode`), then build from the
    cache as always."""
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


def nothing_ingested(data: Path, report: IngestReport) -> str:
    """The one line for a file that gave no ticket: what was read, the first refusal, and what a row needs."""
    first = f"; the first: {report.errors[0]}" if report.errors else ""
    return (f"{data}: no ticket was ingested ({report.rows_read} rows read, {len(report.errors)} refused{first}); "
            "a row needs id, title and created (body, duplicate_of and the schema's fields are optional)")


def ingest_and_build(
    data: Path,
    index_dir: Path,
    schema_name: str | None,
    settings: Settings,
    on_error: str = "skip",
    model: str | None = None,
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

    if fmt == "auto":
        fmt = detect(data)
        log(f"detected format: {fmt} ({data})")
    db = IndexDir(index_dir).store_path
    new_index, dir_existed = not db.exists(), Path(index_dir).exists()
    default = SHIPPED_SCHEMA.get(fmt, "support")
    schema = load_schema(schema_name) if schema_name else (None if db.exists() else load_schema(default))
    store = TicketStore(db, schema=schema)
    remote = None
    try:
        model_spec = model or index_model(index_dir) or settings.model
        if executor == "ray":

            remote = RayEncoding(model_spec, settings, address=ray_address)
            log(remote.describe())
        report = ingest_file(store, data, on_error=on_error, progress=progress, fmt=fmt, mapping=mapping,  # type: ignore[arg-type]  # on_error is checked by the CLI; ingest_file takes the Literal
                             executor=executor)
        for err in report.errors[:20]:
            log(f"skipped {data}: {err}")
        if len(report.errors) > 20:
            log(f"skipped {len(report.errors) - 20} more malformed rows")
        if not report.written:
            raise IngestError(nothing_ingested(data, report))
        repeats = ""
        if report.repeats:
            named = ", ".join(report.repeated_ids[:5]) + (" ..." if len(report.repeated_ids) > 5 else "")
            repeats = (f", {report.repeats} rows repeating an earlier row's id (the last row of each id kept"
                       f"{': ' + named if named else ''})")
        if report.stale:
            named = ", ".join(report.stale[:5]) + (" ..." if len(report.stale) > 5 else "")
            repeats += f", {len(report.stale)} left as stored (their stored version is as new or newer: {named})"
        log(
            f"ingested {report.written} of {report.rows_read} rows "
            f"({report.inserted} new, {report.updated} updated, {len(report.errors)} skipped{repeats}) "
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
        build.rerank_vectors = refresh_rerank_vectors(IndexDir(index_dir), store, encoder, progress, remote, log)
        if build.rerank_vectors:
            log(f"computed reranker vectors for {build.rerank_vectors} tickets")
        prepare_query_encoder(encoder, log)  # here, not on the first search
    except IngestError:  # nothing was written: an index this call created is not left behind, empty
        store.close()
        if new_index:
            for leftover in (db, db.with_name(db.name + ".wal")):
                leftover.unlink(missing_ok=True)
            if not dir_existed and not any(Path(index_dir).iterdir()):
                Path(index_dir).rmdir()
        raise
    except BaseException:  # what was written stays (the embeddings computed so far are in the store's cache)
        store.close()
        raise
    finally:
        if remote is not None:
            remote.close()
    return store, encoder, build
