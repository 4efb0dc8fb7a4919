"""Indexes that take writes while they serve: vector and BM25 indexes plus an overlay of recent changes.

DuckDB stays the source of truth. These structures mirror it in memory between checkpoints:

- `LiveVectors`: flat indexes are changed in place (remove, then add). FAISS cannot remove vectors from an
  HNSW graph or an ID-mapped IVF, so there a changed row's old vector is masked ("stale") and its new one
  lives in a small exact index until `compacted()` rebuilds the index.
- `LiveBM25`: BM25 (bm25s) cannot add documents, so changed rows are masked in the base index and their new
  text is scored with the base index's statistics (`BM25Index.score_tokens`) until the next rebuild.

Every change carries the store's change sequence number, so a rebuild taken from a snapshot at change S can be
swapped in while keeping the changes applied after S.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .lexical import BM25Index, tokenize
from .vector_index import VectorIndex


def _merge(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge (scores, ids) lists into the top k by score; ties broken by row id."""
    scores = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.float32)
    ids = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    keep = ids >= 0
    scores, ids = scores[keep], ids[keep]
    order = np.lexsort((ids, -scores))[:k]
    return scores[order].astype(np.float32), ids[order].astype(np.int64)


class LiveVectors:
    def __init__(self, base: VectorIndex) -> None:
        self.base = base
        self.kind = base.kind
        self.settings = base.settings
        self.overlay = base.kind != "flat"  # FAISS cannot remove from HNSW graphs nor from an ID-mapped IVF
        self.stale: set[int] = set()
        self.delta = VectorIndex.build(np.zeros(0, np.int64), np.zeros((0, base.dim), np.float32), "flat", base.settings)
        self._base_ids = set(base.ids().tolist()) if self.overlay else set()

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def ntotal(self) -> int:
        return len(self.ids())

    def ids(self) -> np.ndarray:
        if not self.overlay:
            return np.sort(self.base.ids())
        base = [i for i in self._base_ids if i not in self.stale]
        return np.unique(np.concatenate([np.asarray(base, np.int64), self.delta.ids()]))

    def upsert(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64)
        if len(ids) == 0:
            return
        if not self.overlay:
            self.base.remove_any(ids)
            self.base.add(ids, vecs)
            return
        self.stale.update(i for i in ids.tolist() if i in self._base_ids)
        self.delta.remove_any(ids)
        self.delta.add(ids, vecs)

    def delete(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64)
        if len(ids) == 0:
            return
        if not self.overlay:
            self.base.remove_any(ids)
            return
        self.stale.update(i for i in ids.tolist() if i in self._base_ids)
        self.delta.remove_any(ids)

    def reconstruct(self, row_id: int) -> np.ndarray:
        if self.overlay:
            try:
                return self.delta.reconstruct(row_id)
            except KeyError:
                if row_id in self.stale:
                    raise
        return self.base.reconstruct(row_id)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if not self.overlay or (not self.stale and self.delta.ntotal == 0):
            return self.base.search(queries, k, allowed)
        q = np.atleast_2d(queries)
        bs, bi = self.base.search(q, k + len(self.stale), allowed)
        ds, di = self.delta.search(q, k, allowed)
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        stale = np.fromiter(self.stale, np.int64, len(self.stale))
        for r in range(len(q)):
            keep = ~np.isin(bi[r], stale)
            s, i = _merge([(bs[r][keep], bi[r][keep]), (ds[r], di[r])], k)
            out_s[r, : len(s)], out_i[r, : len(i)] = s, i
        return out_s, out_i

    def compacted(self) -> VectorIndex:
        """A plain index holding exactly the live vectors (the HNSW graph is rebuilt when it has changes)."""
        if not self.overlay or (not self.stale and self.delta.ntotal == 0):
            return self.base
        ids = self.ids()
        vecs = np.vstack([self.reconstruct(int(i)) for i in ids]) if len(ids) else np.zeros((0, self.dim), np.float32)
        return VectorIndex.build(ids, vecs, kind=self.kind, settings=self.settings)

    def save(self, path: Path) -> Path:
        return self.compacted().save(path)


class LiveBM25:
    def __init__(self, base: BM25Index) -> None:
        self.base = base
        self.stale: set[int] = set()  # base rows whose indexed text is out of date or deleted
        self.delta: dict[int, tuple[int, list[str]]] = {}  # row id -> (change seq, tokens) written since base
        self.deleted: dict[int, int] = {}  # row id -> change seq of its deletion since base

    def __len__(self) -> int:
        return len(self.base) - len(self.stale) + len(self.delta)

    @property
    def changed(self) -> int:
        return len(self.delta) + len(self.deleted)

    def upsert(self, row_ids: list[int], texts: list[str], seq: int) -> None:
        toks = tokenize(texts) if texts else []
        for r, t in zip(row_ids, toks):
            if r in self.base._pos:
                self.stale.add(r)
            self.delta[r] = (seq, t)
            self.deleted.pop(r, None)

    def delete(self, row_ids: list[int], seq: int) -> None:
        for r in row_ids:
            if r in self.base._pos:
                self.stale.add(r)
            self.delta.pop(r, None)
            self.deleted[r] = seq

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if not self.stale and not self.delta:
            return self.base.search(query, k, allowed)
        bs, bi = self.base.search(query, k + len(self.stale), allowed)
        keep = ~np.isin(bi, np.fromiter(self.stale, np.int64, len(self.stale)))
        parts = [(bs[keep], bi[keep])]
        allowed_set = None if allowed is None else _as_set(allowed)
        rows = [r for r in self.delta if allowed_set is None or r in allowed_set]
        if rows:
            q = tokenize([query])[0]
            ds = self.base.score_tokens(q, [self.delta[r][1] for r in rows])
            pos = ds > 0
            parts.append((ds[pos], np.asarray(rows, np.int64)[pos]))
        return _merge(parts, k)

    def score_rows(self, query: str, row_ids: list[int]) -> np.ndarray:
        """BM25 scores of these rows as `search` scores them (written rows with the base's statistics)."""
        out = self.base.score_rows(query, row_ids)
        fresh = [(i, r) for i, r in enumerate(row_ids) if r in self.delta or r in self.stale]
        if fresh:
            q = tokenize([query])[0]
            docs = [self.delta[r][1] if r in self.delta else [] for _, r in fresh]
            for (i, _), s in zip(fresh, self.base.score_tokens(q, docs).tolist()):
                out[i] = s
        return out

    def rebased(self, base: BM25Index, snapshot_seq: int) -> LiveBM25:
        """This index on a new base built from a snapshot at `snapshot_seq`, keeping later changes."""
        out = LiveBM25(base)
        for r, (seq, toks) in self.delta.items():
            if seq > snapshot_seq:
                if r in base._pos:
                    out.stale.add(r)
                out.delta[r] = (seq, toks)
        for r, seq in self.deleted.items():
            if seq > snapshot_seq:
                if r in base._pos:
                    out.stale.add(r)
                out.deleted[r] = seq
        return out


def _as_set(allowed: np.ndarray) -> set[int]:
    return set(np.asarray(allowed).tolist())


class RowVectors:
    """Vectors keyed by row id that take upserts and deletes (the reranker's cached candidate vectors)."""

    def __init__(self, rows: np.ndarray, vecs: np.ndarray, dtype: np.dtype | type = np.float32) -> None:
        """`dtype` is the storage type (float32, or float16 for half the memory); reads return float32."""
        vecs = np.asarray(vecs)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise ValueError(f"vectors are stored as float32 or float16, not {self.dtype}")
        self.dim = vecs.shape[1] if vecs.ndim == 2 else 0
        self._buf = np.array(vecs, self.dtype, copy=True).reshape(len(rows), self.dim)
        self._pos: dict[int, int] = {int(r): i for i, r in enumerate(np.asarray(rows).tolist())}
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self._pos)

    def __contains__(self, row_id: int) -> bool:
        return int(row_id) in self._pos

    def rows(self) -> np.ndarray:
        return np.sort(np.fromiter(self._pos, np.int64, len(self._pos)))

    def get(self, row_ids: list[int]) -> np.ndarray:
        return self._buf[[self._pos[int(r)] for r in row_ids]].astype(np.float32, copy=False)

    def upsert(self, row_ids: list[int], vecs: np.ndarray) -> None:
        for r, v in zip(row_ids, np.asarray(vecs, np.float32)):
            slot = self._pos.get(int(r))
            if slot is None:
                slot = self._free.pop() if self._free else self._grow()
                self._pos[int(r)] = slot
            self._buf[slot] = v.astype(self.dtype)

    def delete(self, row_ids: list[int]) -> None:
        for r in row_ids:
            slot = self._pos.pop(int(r), None)
            if slot is not None:
                self._free.append(slot)

    def _grow(self) -> int:
        used = len(self._pos) + len(self._free)
        if used >= len(self._buf):
            bigger = np.zeros((max(16, 2 * len(self._buf)), self.dim), self.dtype)
            bigger[: len(self._buf)] = self._buf
            self._buf = bigger
        return used

    def compact(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, vectors) in row-id order, for saving."""
        rows = self.rows()
        vecs = self._buf[[self._pos[int(r)] for r in rows]] if len(rows) else np.zeros((0, self.dim), self.dtype)
        return rows, vecs
