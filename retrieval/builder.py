"""The first stage's indexes of an index directory, built from its DuckDB store: dense (text and title) and BM25.

Embeddings are cached in the store by (model key, text hash), so a rebuild only encodes new or changed text.
The ingest workflow that composes them (store, indexes, features, manifest, the reranker's vectors) is the
application's: `pipeline/ingest.py`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from ticketsearch.index_data.records import text_hash, ticket_text
from ticketsearch.index_data.store import StoreTexts, TicketStore, read_texts
from ticketsearch.index_dir import IndexDir
from ticketsearch.settings import Settings

from .encoder import Encoder
from .lexical import BM25Index, bm25_text
from .vector_index import VectorIndex

if TYPE_CHECKING:  # Ray is optional: imported only for --executor ray
    pass


CACHE_EVERY = 1024  # texts encoded between two writes to the embedding cache (20-40 s of MiniLM here)


def embed_texts(
    store: TicketStore, encoder: Encoder, key: str, texts: list[str], progress: bool, desc: str
) -> tuple[np.ndarray, int, float]:
    """Embeddings of `texts`, through the store's cache under `key`. Returns (vecs, encoded, seconds)."""
    hashes = [text_hash(t) for t in texts]
    unique = dict(zip(hashes, texts))
    cache = store.cached_embeddings(key, list(unique))
    missing = [h for h in unique if h not in cache]
    t0 = time.perf_counter()
    with tqdm(total=len(missing), desc=desc, unit=" tickets", disable=not progress or not missing,
              mininterval=0.5) as bar:
        for s in range(0, len(missing), CACHE_EVERY):  # each part cached as it is done: an interrupted build
            part = missing[s : s + CACHE_EVERY]  # (Ctrl-C) keeps what it encoded, and the next run skips it
            vecs = encoder.encode([unique[h] for h in part])
            if not store.read_only:
                store.put_embeddings(key, part, vecs)
            cache.update(zip(part, vecs))
            bar.update(len(part))
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
