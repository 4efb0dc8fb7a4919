"""The installed reranker's per-ticket parts: cached candidate vectors and frozen-encoder token states.

A candidate's vector depends on that ticket alone, so it is computed once (at `train` and at every
`ingest`), stored in the index tagged with the reranker's checksum, and updated live by the service.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from ticketsearch.atomic import atomic_write_json, atomic_write_npy
from ticketsearch.errors import TicketsearchError
from ticketsearch.index_data.records import text_hash, ticket_text
from ticketsearch.index_data.store import TicketStore, read_texts
from ticketsearch.index_dir import IndexDir
from ticketsearch.rerank.general import is_linear
from ticketsearch.rerank.runtime import Reranker, prepare_reranker_parts
from ticketsearch.rerank.token_cache import EncodeFn, TokenCache, Tokens
from ticketsearch.retrieval.encoder import Encoder, TokenBatch
from ticketsearch.retrieval.live import RowVectors, VectorTable


def store_values(store: TicketStore) -> dict[int, dict[str, Any]]:
    """row id -> typed field values, for every stored ticket."""
    return store.values_by_row()


def token_cache_for(index_dir: IndexDir, encoder: Encoder | str) -> TokenCache:
    """The index's token-state cache for this encoder (one folder per encoder identity: an `Encoder`, or its
    `key`)."""
    return TokenCache(index_dir.token_cache_path(encoder if isinstance(encoder, str) else encoder.key))


def token_encode_fn(encoder: Encoder) -> EncodeFn:
    """The encode callable a TokenCache fills itself with: token states, mask and token ids."""

    def encode(batch: list[str]):  # noqa: ANN202
        tb = encoder.encode_with_tokens(batch)
        return tb.tokens, tb.attention_mask, tb.input_ids

    return encode


def refresh_rerank_vectors(d: IndexDir, store: TicketStore, encoder: Encoder, progress: bool = True,
                           remote: Any = None, log: Callable[[str], None] = lambda _: None) -> int:
    """The one way an index refreshes the installed reranker's candidate vectors after its tickets changed in
    bulk (an ingest, a split, an installed model): every ticket's, or none (0) when no reranker is installed or
    the installed one is linear.
    `remote` (a `RayEncoding`): the token states are encoded on Ray first, so nothing is encoded here.
    The reranker's ONNX parts are exported here too where searches will use them (once per model on a
    machine, said through `log`), so that no search pays for it."""
    if not d.has_reranker() or is_linear(d.reranker_path):  # a linear model reads no vectors
        return 0
    if remote is not None:
        st = read_texts(store)
        full = [ticket_text(store.schema, t, b) for t, b in zip(st.titles, st.bodies)]
        remote.fill_token_cache(token_cache_for(d, encoder), [text_hash(t) for t in full], full, progress)
    n = build_rerank_vectors(d, store, encoder, progress=progress)
    settings = encoder.settings
    if settings.rerank_runtime == "onnx" and encoder.device == "cpu":
        prepare_reranker_parts(d.reranker_path, settings.cache_dir, log)
    return n


def build_rerank_vectors(index_dir: IndexDir, store: TicketStore, encoder: Encoder, progress: bool = True) -> int:
    """Compute every ticket's target vector with the installed reranker; tag the file with its checksum (none
    for a linear reranker, which reads no vectors: 0)."""
    if is_linear(index_dir.reranker_path):
        return 0
    reranker = Reranker(index_dir.reranker_path, device=encoder.settings.device)
    st = read_texts(store)
    values = store_values(store)
    texts = [ticket_text(store.schema, t, b) for t, b in zip(st.titles, st.bodies)]
    hashes = [text_hash(t) for t in texts]
    cache = token_cache_for(index_dir, encoder)
    cache.ensure(hashes, texts, token_encode_fn(encoder), progress=progress)
    vecs = reranker.vectors_from_cache([cache.get(h) for h in hashes], [values[int(r)] for r in st.row_ids], "target")
    dtype = np.float16 if encoder.settings.rerank_vector_dtype == "float16" else np.float32
    save_rerank_vectors(index_dir, reranker, RowVectors(st.row_ids, vecs, dtype), store.change_seq)
    index_dir.rerank_overlay_path.unlink(missing_ok=True)  # the new base holds every change
    return len(st.row_ids)


def load_rerank_vectors(index_dir: IndexDir, reranker: Reranker) -> RowVectors:
    """The cached candidate vectors, checked against the reranker's checksum, with the live changes saved on
    top of them since (an overlay of another reranker, or older than these vectors, is ignored). Raises
    TicketsearchError when either file is unreadable."""
    path = index_dir.rerank_vectors_path
    try:
        tag = json.loads(index_dir.rerank_tag_path.read_text())
        vecs = np.load(path, allow_pickle=False)
        rows = np.load(index_dir.rerank_rows_path, allow_pickle=False)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise TicketsearchError(f"{path}: missing or unreadable cached reranker vectors ({exc})") from None
    if tag.get("checksum") != reranker.checksum:
        raise TicketsearchError(f"{path}: computed by another reranker (checksum differs)")
    if vecs.ndim != 2 or len(vecs) != len(rows) or len(rows) != tag.get("count"):
        raise TicketsearchError(f"{path}: {len(vecs)} vectors for {len(rows)} rows (tag says {tag.get('count')})")
    out = RowVectors(rows, vecs, dtype=vecs.dtype)
    out.load_overlay(index_dir.rerank_overlay_path, int(tag.get("change_seq", 0)), tag=reranker.checksum)
    return out


def save_rerank_vectors(index_dir: IndexDir, reranker: Reranker, vectors: RowVectors | VectorTable,
                        change_seq: int) -> None:
    """Write a whole base of candidate vectors, tagged with the reranker's checksum and the change it reflects."""
    rows, vecs = vectors.compact()
    atomic_write_npy(index_dir.rerank_vectors_path, vecs)
    atomic_write_npy(index_dir.rerank_rows_path, rows.astype(np.int64))
    atomic_write_json(index_dir.rerank_tag_path, {"checksum": reranker.checksum, "count": len(rows),
                                                  "change_seq": change_seq, "model": reranker.name})


def batch_tokens(tb: TokenBatch) -> list[Tokens]:
    """Each row's token states (fp16, as cached) and ids, without padding."""
    out = []
    for i in range(len(tb.input_ids)):
        n = int(tb.attention_mask[i].sum())
        out.append(Tokens(tb.tokens[i, :n].float().cpu().numpy().astype(np.float16), tb.input_ids[i, :n].cpu().numpy()))
    return out


def token_states(encoder: Encoder, texts: list[str]) -> list[Tokens]:
    """Token states and ids of each text (unpadded), from one encoder pass."""
    return batch_tokens(encoder.encode_with_tokens(texts)) if texts else []
