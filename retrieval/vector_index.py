"""The FAISS vector index over L2-normalised embeddings (inner product = cosine), keyed by store row ids.

Kinds: exact `flat`, graph `hnsw`, and inverted-file `ivf`. `auto` picks flat up to a size threshold and
HNSW above it. A filtered search (an allowed set of row ids) is exact when the allowed set is small, and
uses FAISS's IDSelector otherwise, so that a filtered search still returns k hits when k exist.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np

from ticketsearch.atomic import atomic_write_with
from ticketsearch.errors import TicketsearchError
from ticketsearch.settings import Settings

from .ties import tie_keys


def choose_kind(n: int, settings: Settings) -> str:
    if settings.index_type != "auto":
        return settings.index_type
    return "flat" if n <= settings.flat_max_rows else "hnsw"


class VectorIndex:
    def __init__(self, index: faiss.IndexIDMap2, kind: str, settings: Settings) -> None:
        self.index = index
        self.kind = kind
        self.settings = settings
        self._apply_search_params()

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def build(
        cls, ids: np.ndarray, vecs: np.ndarray, kind: str = "auto", *, settings: Settings
    ) -> VectorIndex:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        if vecs.ndim != 2 or len(ids) != len(vecs):
            raise ValueError("ids and vecs must have the same length")
        dim = vecs.shape[1]
        if kind == "auto":
            kind = choose_kind(len(ids), settings)
        if kind == "flat":
            base: faiss.Index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            base = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efConstruction = settings.hnsw_ef_construction
        elif kind == "ivf":
            nlist = max(1, min(int(4 * np.sqrt(max(len(ids), 1))), max(len(ids) // 39, 1)))
            quantizer = faiss.IndexFlatIP(dim)
            base = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            raise TicketsearchError(f"unknown index type {kind!r} (flat, hnsw, ivf, auto)")
        index = faiss.IndexIDMap2(base)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(os.cpu_count() or 1)  # building uses every core; searching may use fewer
        try:
            if kind == "ivf" and len(ids):
                base.train(vecs)
            if len(ids):
                index.add_with_ids(vecs, ids)
        finally:
            faiss.omp_set_num_threads(threads)
        return cls(index, kind, settings)

    def _apply_search_params(self) -> None:
        base = faiss.downcast_index(self.index.index)
        if isinstance(base, faiss.IndexHNSW):
            base.hnsw.efSearch = self.settings.hnsw_ef_search
        elif isinstance(base, faiss.IndexIVF):
            base.nprobe = self.settings.ivf_nprobe
            # reconstruct by id; allows removal
            if base.direct_map.type == faiss.DirectMap.NoMap:  # type: ignore[attr-defined]  # stubs lack DirectMap
                base.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]  # stubs lack DirectMap

    # ---- persistence ----------------------------------------------------------------------------
    def save(self, path: Path) -> Path:
        target = Path(path)
        atomic_write_with(target, lambda p: faiss.write_index(self.index, str(p)))
        return target

    @classmethod
    def load(
        cls, path: Path, kind: str, settings: Settings
    ) -> VectorIndex:
        path = Path(path)
        if not path.is_file():
            raise TicketsearchError(f"{path}: no vector index here (run 'ticketsearch ingest' first)")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise TicketsearchError(f"{path}: unreadable FAISS index ({str(exc).splitlines()[0]})") from None
        if not isinstance(index, faiss.IndexIDMap2):
            raise TicketsearchError(f"{path}: not an id-mapped FAISS index ({type(index).__name__})")
        return cls(index, kind, settings)

    # ---- queries --------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def reconstruct(self, row_id: int) -> np.ndarray:
        try:
            # np.asarray: faiss's stubs pick the torch overload when no output buffer is given
            return np.asarray(self.index.reconstruct(int(row_id)))
        except RuntimeError:
            raise KeyError(row_id) from None

    def reconstruct_many(self, row_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored vectors of these rows (those the index holds), in one pass where every row is held."""
        if not row_ids:
            return {}
        try:
            got = np.asarray(self.index.reconstruct_batch(np.asarray(row_ids, np.int64)))
            return dict(zip((int(r) for r in row_ids), got))
        except RuntimeError:  # a row the index does not hold: one at a time, without it
            out: dict[int, np.ndarray] = {}
            for r in row_ids:
                try:
                    out[int(r)] = self.reconstruct(r)
                except KeyError:
                    pass
            return out

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, row ids) per query, best first, equal scores by row id (older tickets first, as the
        evaluation breaks ties by time); -1 ids pad rows with fewer than k results. Equal scores at the cut are
        settled by row id too (FAISS keeps whichever its heap met first): every index and every shard of the same
        tickets returns the same k."""
        k = max(1, int(k))
        kk = k + TIE_MARGIN
        while True:
            scores, ids = _ties_by_row_id(*self._search(queries, kk, allowed))
            cut = ids[:, -1] >= 0  # a full list whose last score ties the k-th may hide a tied one below it
            if not (cut & (tie_keys(scores[:, k - 1]) == tie_keys(scores[:, -1]))).any() or kk >= self.ntotal:
                return scores[:, :k], ids[:, :k]
            kk *= 2

    def _search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, int(k))
        if allowed is None:
            return self.index.search(q, k)
        allowed = np.ascontiguousarray(allowed, dtype=np.int64)
        if len(allowed) == 0:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        if self.kind == "flat" or len(allowed) <= self.settings.exact_filter_max:
            return self._exact_subset(q, k, allowed)
        sel = faiss.IDSelectorBatch(allowed)
        base = faiss.downcast_index(self.index.index)
        if isinstance(base, faiss.IndexHNSW):
            ef = max(self.settings.hnsw_ef_search, k)
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=ef)  # type: ignore[attr-defined]  # not in faiss's stubs
        elif isinstance(base, faiss.IndexIVF):
            params = faiss.SearchParametersIVF(sel=sel, nprobe=self.settings.ivf_nprobe)  # type: ignore[call-arg]  # stubs lack kwargs
        else:
            params = faiss.SearchParameters(sel=sel)  # type: ignore[call-arg]  # faiss's stubs lack keyword constructors
        scores, ids = self.index.search(q, k, params=params)
        short = (ids >= 0).sum(axis=1) < min(k, len(allowed))
        if short.any():
            # The approximate search ran dry before k hits; answer those queries exactly.
            s2, i2 = self._exact_subset(q[short], k, allowed)
            scores[short], ids[short] = s2, i2
        return scores, ids

    def _exact_subset(self, q: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        present = allowed[np.isin(allowed, self.ids(), assume_unique=False)] if self.kind != "flat" else allowed
        if self.kind == "flat":
            sel = faiss.IDSelectorBatch(present)
            params = faiss.SearchParameters(sel=sel)  # type: ignore[call-arg]  # faiss's stubs lack keyword constructors
            return self.index.search(q, k, params=params)
        if len(present):
            vecs = np.vstack([self.index.reconstruct(int(i)) for i in present])
        else:
            vecs = np.zeros((0, q.shape[1]), np.float32)
        sims = q @ vecs.T
        kk = min(k, len(present))
        scores = np.full((len(q), k), -np.inf, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        if kk:
            top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
            for r in range(len(q)):
                order = top[r][np.argsort(-sims[r, top[r]], kind="stable")]
                scores[r, :kk] = sims[r, order]
                ids[r, :kk] = present[order]
        return scores, ids

    # ---- updates --------------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        self.index.add_with_ids(np.ascontiguousarray(vecs, np.float32), np.ascontiguousarray(ids, np.int64))
        base = faiss.downcast_index(self.index.index)
        if isinstance(base, faiss.IndexIVF):  # FAISS does not extend an IVF direct map on add: rebuild it
            base.set_direct_map_type(faiss.DirectMap.NoMap)  # type: ignore[attr-defined]  # stubs lack DirectMap
            base.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]  # stubs lack DirectMap

    def remove_any(self, ids: np.ndarray) -> int:
        """Remove whichever of these row ids are present (flat only; see `retrieval.live` for the others)."""
        if self.ntotal == 0 or len(ids) == 0:
            return 0
        return self.remove(ids)

    def remove(self, ids: np.ndarray) -> int:
        """Remove vectors by row id (flat only: FAISS cannot remove from HNSW graphs, nor from an ID-mapped IVF)."""
        if self.kind != "flat":
            raise TicketsearchError(f"removing vectors from a {self.kind} index is not supported; rebuild it")
        return int(self.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, np.int64))))


TIE_MARGIN = 8  # results beyond k fetched to see whether equal scores straddle the cut


def _ties_by_row_id(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder each row's results in the one order of ranked lists (`ties.py`: scores equal to its decimals are
    ties, by row id); padding (-1) stays last. FAISS orders near-equal scores by their last bits (tickets of one
    title have title vectors that differ only there) and exactly equal ones by its heap."""
    scores, ids = np.asarray(scores), np.asarray(ids)
    for r in range(len(ids)):
        valid = ids[r] >= 0
        n = int(valid.sum())
        s_r, i_r = scores[r][valid], ids[r][valid]
        keys = tie_keys(s_r)
        if n > 1 and np.any(keys[1:] == keys[:-1]):
            order = np.lexsort((i_r, -keys))
            scores[r, :n], ids[r, :n] = s_r[order], i_r[order]
    return scores, ids
