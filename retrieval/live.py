"""Indexes that take writes while they serve: a base that is never changed once built, plus an overlay of the
changes since it was built.

DuckDB stays the source of truth; these structures mirror it in memory and on disk.

- The base (a FAISS index, a BM25 index, a table of the reranker's candidate vectors) is read-only, so searches
  and a compaction read it at the same time without a lock.
- The overlay holds every change since the base was built: row id -> (change seq, new value, or None for a
  deletion). Base rows it changes are masked ("stale"); new values are searched exactly beside the base
  (`LiveVectors`: a small flat FAISS index; `LiveBM25`: scored with the base's statistics; `RowVectors`: read
  directly).
- A checkpoint saves the overlay alone (`save_overlay`: one small file, O(changes)). Once the overlay has grown
  past `Settings.compact_changes`, `compacted(snapshot)` builds a new base from a snapshot, outside any lock, and
  `rebase` swaps it in, keeping the changes applied after the snapshot (every change carries the store's change
  sequence number).
- An overlay file records the checkpoint it was written at and, where it matters, a tag (the reranker's
  checksum). `load_overlay` ignores one written before the base it would apply to (an older checkpoint than
  `min_seq`, e.g. from before `ticketsearch ingest` rebuilt the base) or with another tag.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from ticketsearch.atomic import atomic_write_with
from ticketsearch.errors import TicketsearchError

from .lexical import BM25Index, CorpusStats, tokenize
from .ties import top_k
from .vector_index import VectorIndex

B = TypeVar("B")
V = TypeVar("V")

OVERLAY_FORMAT = 1


def _merge(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge (scores, ids) lists into the top k by score; ties broken by row id."""
    scores = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.float32)
    ids = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    keep = ids >= 0
    scores, ids = scores[keep], ids[keep]
    scores, ids = top_k(scores, ids, k)
    return scores.astype(np.float32), ids.astype(np.int64)


def _in_sorted(sorted_ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Which of `rows` are in `sorted_ids` (sorted, unique)."""
    rows = np.asarray(rows, np.int64)
    if len(sorted_ids) == 0:
        return np.zeros(len(rows), bool)
    at = np.minimum(np.searchsorted(sorted_ids, rows), len(sorted_ids) - 1)
    return np.asarray(sorted_ids[at] == rows)


def _masked_top(search: Callable[[int], tuple[np.ndarray, np.ndarray]], k: int,
                stale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The top k of a base search without its stale rows.

    Asks for k + min(stale, k) first and for k + stale only when that came back short, so a large overlay
    costs a deeper search only for the queries that hit many stale rows. Exact: when at least k of the first
    list survive, no row below it can enter the top k.
    """
    if len(stale) == 0:
        return search(k)
    kk = k + min(len(stale), k)
    s, i = search(kk)
    keep = ~np.isin(i, stale)
    if keep.sum() < k and len(i) >= kk and kk < k + len(stale):
        s, i = search(k + len(stale))
        keep = ~np.isin(i, stale)
    return s[keep][:k], i[keep][:k]


@dataclass(frozen=True)
class Snapshot(Generic[B, V]):
    """A live index's base and a copy of its overlay at change `seq` (taken under the engine's lock: O(changes))."""

    base: B
    members: np.ndarray  # the base's row ids, sorted
    changes: dict[int, tuple[int, V | None]]
    seq: int

    def alive(self) -> tuple[np.ndarray, list[V]]:
        """Row ids (sorted) and values of the overlay's upserts."""
        rows = sorted(r for r, (_, v) in self.changes.items() if v is not None)
        return np.asarray(rows, np.int64), [v for r in rows if (v := self.changes[r][1]) is not None]

    def changed_rows(self) -> np.ndarray:
        return np.fromiter(self.changes, np.int64, len(self.changes))


@dataclass(frozen=True)
class Compacted(Generic[B]):
    """A new base built from a snapshot at change `seq`, ready to be swapped in by `Live.rebase`."""

    base: B
    members: np.ndarray  # its row ids, sorted
    seq: int


class Live(Generic[B, V]):
    """A base that is never changed once built, plus the changes since it was built (the overlay).

    Subclasses say how a base lists its rows, how overlay values are kept searchable and stored, and how a new
    base is built from a snapshot (`compacted`).
    """

    def __init__(self, base: B) -> None:
        self._set_base(base, np.sort(self._base_ids(base)))

    # ---- what a subclass provides -----------------------------------------------------------------
    @staticmethod
    def _base_ids(base: B) -> np.ndarray:
        raise NotImplementedError

    def _reset_overlay(self) -> None:
        """Start any search structure over the overlay afresh (it is empty)."""

    def _overlay_changed(self, rows: list[int]) -> None:
        """Keep any search structure over the overlay in step with `changes` for these rows."""

    def _encode(self, values: list[V]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _decode(self, arrays: dict[str, np.ndarray], n: int) -> list[V]:
        raise NotImplementedError

    def compacted(self, snap: Snapshot[B, V]) -> Compacted[B]:
        """A new base holding the snapshot's rows (slow: call it outside any lock; the base is read-only)."""
        raise NotImplementedError

    # ---- changes ----------------------------------------------------------------------------------
    def _set_base(self, base: B, members: np.ndarray) -> None:
        self.base = base
        self._members = members
        self.changes: dict[int, tuple[int, V | None]] = {}
        self.stale: set[int] = set()  # base rows the overlay replaces or deletes
        self._stale_arr: np.ndarray | None = None
        self._alive = 0  # upserts in the overlay
        self._reset_overlay()

    def _put(self, rows: Sequence[int], values: Sequence[V | None], seqs: Sequence[int]) -> None:
        rows = [int(r) for r in rows]
        if not rows:
            return
        in_base = _in_sorted(self._members, np.asarray(rows, np.int64)).tolist()
        for r, v, s, b in zip(rows, values, seqs, in_base):
            old = self.changes.get(r)
            self._alive += (v is not None) - (old is not None and old[1] is not None)
            self.changes[r] = (int(s), v)
            if b:
                self.stale.add(r)
        self._stale_arr = None
        self._overlay_changed(rows)

    def delete(self, row_ids: Sequence[int] | np.ndarray, seq: int = 0) -> None:
        rows = [int(r) for r in row_ids]
        self._put(rows, [None] * len(rows), [seq] * len(rows))

    @property
    def changed(self) -> int:
        """Rows changed since the base was built (the overlay's size)."""
        return len(self.changes)

    def __len__(self) -> int:
        return len(self._members) - len(self.stale) + self._alive

    def _stale(self) -> np.ndarray:
        if self._stale_arr is None:
            self._stale_arr = np.fromiter(self.stale, np.int64, len(self.stale))
        return self._stale_arr

    def ids(self) -> np.ndarray:
        """Every live row id, sorted."""
        alive = np.fromiter((r for r, (_, v) in list(self.changes.items()) if v is not None), np.int64)
        base = self._members[~np.isin(self._members, self._stale())] if self.stale else self._members
        return np.union1d(base, alive).astype(np.int64)

    # ---- compaction -------------------------------------------------------------------------------
    def snapshot(self, seq: int) -> Snapshot[B, V]:
        """The base and a copy of the overlay, as of change `seq` (hold the lock that excludes writers)."""
        return Snapshot(self.base, self._members, dict(self.changes), seq)

    def rebase(self, new: Compacted[B]) -> None:
        """Swap in a base built from a snapshot at `new.seq`, keeping the changes applied after it.

        Cheap (O(later changes)): hold the lock that excludes searches and writers.
        """
        later = sorted(((r, c) for r, c in self.changes.items() if c[0] > new.seq), key=lambda rc: rc[1][0])
        self._set_base(new.base, new.members)
        self._put([r for r, _ in later], [c[1] for _, c in later], [c[0] for _, c in later])

    # ---- persistence ------------------------------------------------------------------------------
    def save_overlay(self, path: Path, snap: Snapshot[B, V], tag: str = "") -> None:
        """Write the snapshot's overlay (not the base) atomically, as one .npz file stamped with `snap.seq`."""
        rows = np.asarray(sorted(snap.changes), np.int64)
        alive = np.array([snap.changes[r][1] is not None for r in rows.tolist()], bool)
        values = [v for r in rows[alive].tolist() if (v := snap.changes[r][1]) is not None]
        arrays: dict[str, np.ndarray] = {
            "format": np.array(OVERLAY_FORMAT, np.int64), "checkpoint_seq": np.array(snap.seq, np.int64),
            "tag": np.array(tag), "rows": rows, "alive": alive,
            "seqs": np.array([snap.changes[r][0] for r in rows.tolist()], np.int64), **self._encode(values),
        }

        def write(p: Path) -> None:
            with open(p, "wb") as fh:
                np.savez(fh, allow_pickle=False, **arrays)

        atomic_write_with(Path(path), write)

    def load_overlay(self, path: Path, min_seq: int, tag: str = "") -> int | None:
        """Apply a saved overlay; the number of changes applied, or None when there is none or it is obsolete
        (written at a checkpoint before `min_seq`, or with another tag). Raises TicketsearchError if unreadable."""
        path = Path(path)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
            if int(arrays["format"]) != OVERLAY_FORMAT:
                raise ValueError(f"format {int(arrays['format'])}, expected {OVERLAY_FORMAT}")
            rows, alive, seqs = arrays["rows"], arrays["alive"].astype(bool), arrays["seqs"]
            if not len(rows) == len(alive) == len(seqs):
                raise ValueError(f"{len(rows)} rows, {len(alive)} flags, {len(seqs)} change numbers")
            values = self._decode(arrays, int(alive.sum()))
            checkpoint, saved_tag = int(arrays["checkpoint_seq"]), str(arrays["tag"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise TicketsearchError(f"{path}: unreadable overlay ({exc})") from None
        if checkpoint < min_seq or saved_tag != tag:
            return None
        it = iter(values)
        self._put(rows.tolist(), [next(it) if a else None for a in alive.tolist()], seqs.tolist())
        return len(rows)


def _vector_arrays(values: list[np.ndarray], dim: int, dtype: np.dtype | type) -> dict[str, np.ndarray]:
    return {"vecs": np.stack(values).astype(dtype) if values else np.zeros((0, dim), dtype)}


def _vectors_from(arrays: dict[str, np.ndarray], n: int, dim: int) -> np.ndarray:
    vecs = arrays["vecs"]
    if vecs.shape != (n, dim):
        raise ValueError(f"vectors of shape {vecs.shape}, expected {(n, dim)}")
    return vecs


def _fold(rows: np.ndarray, vecs: np.ndarray, snap: Snapshot[Any, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Base (rows, vectors) with a snapshot's overlay folded in, in row-id order."""
    keep = ~np.isin(rows, snap.changed_rows())
    new_rows, new_vecs = snap.alive()
    rows = np.concatenate([rows[keep], new_rows])
    vecs = np.concatenate([vecs[keep], np.stack(new_vecs).astype(vecs.dtype) if new_vecs else vecs[:0]])
    order = np.argsort(rows, kind="stable")
    return rows[order], vecs[order]


class LiveVectors(Live[VectorIndex, np.ndarray]):
    """A FAISS index (any kind) that takes upserts and deletes: new vectors live in a small exact index."""

    def __init__(self, base: VectorIndex) -> None:
        self.kind = base.kind
        self.settings = base.settings
        self._dim = base.dim
        super().__init__(base)

    @staticmethod
    def _base_ids(base: VectorIndex) -> np.ndarray:
        return base.ids()

    def _reset_overlay(self) -> None:
        self.delta = VectorIndex.build(np.zeros(0, np.int64), np.zeros((0, self._dim), np.float32), "flat",
                                       settings=self.settings)

    def _overlay_changed(self, rows: list[int]) -> None:
        self.delta.remove_any(np.asarray(rows, np.int64))
        alive = {r: v for r in rows if (v := self.changes[r][1]) is not None}
        if alive:
            self.delta.add(np.fromiter(alive, np.int64, len(alive)), np.stack(list(alive.values())))

    def _encode(self, values: list[np.ndarray]) -> dict[str, np.ndarray]:
        return _vector_arrays(values, self._dim, np.float32)

    def _decode(self, arrays: dict[str, np.ndarray], n: int) -> list[np.ndarray]:
        return list(_vectors_from(arrays, n, self._dim).astype(np.float32))

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def ntotal(self) -> int:
        return len(self)

    def upsert(self, ids: Sequence[int] | np.ndarray, vecs: np.ndarray, seq: int = 0) -> None:
        vecs = np.asarray(vecs, np.float32).reshape(len(ids), self._dim)
        self._put([int(i) for i in ids], list(vecs.copy()), [seq] * len(ids))

    def reconstruct(self, row_id: int) -> np.ndarray:
        change = self.changes.get(int(row_id))
        if change is not None:
            if change[1] is None:
                raise KeyError(row_id)
            return change[1]
        return self.base.reconstruct(row_id)

    def reconstruct_many(self, row_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The live vectors of these rows (those that exist): changed rows from the overlay, the rest from the
        base in one pass."""
        out: dict[int, np.ndarray] = {}
        rest = []
        for r in row_ids:
            change = self.changes.get(int(r))
            if change is None:
                rest.append(int(r))
            elif change[1] is not None:
                out[int(r)] = change[1]
        out.update(self.base.reconstruct_many(rest))
        return out

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        if not self.changes:
            return self.base.search(q, k, allowed)
        ds, di = self.delta.search(q, k, allowed)
        stale = self._stale()
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        for r in range(len(q)):
            def base_top(kk: int, r: int = r) -> tuple[np.ndarray, np.ndarray]:
                s, i = self.base.search(q[r : r + 1], kk, allowed)
                return s[0][i[0] >= 0], i[0][i[0] >= 0]

            s, i = _merge([_masked_top(base_top, k, stale), (ds[r], di[r])], k)
            out_s[r, : len(s)], out_i[r, : len(i)] = s, i
        return out_s, out_i

    def compacted(self, snap: Snapshot[VectorIndex, np.ndarray]) -> Compacted[VectorIndex]:
        """The snapshot's vectors in a new index of the same kind (the HNSW graph or IVF lists rebuilt)."""
        base = snap.base
        # the index inside FAISS's id map holds the vectors in insertion order, aligned with base.ids()
        inner = base.index.index
        n = int(inner.ntotal)
        vecs = inner.reconstruct_n(0, n) if n else np.zeros((0, self._dim), np.float32)
        rows, vecs = _fold(base.ids(), vecs, snap)
        return Compacted(VectorIndex.build(rows, vecs, kind=self.kind, settings=self.settings), rows, snap.seq)


class LiveBM25(Live[BM25Index, list[str]]):
    """BM25 (bm25s cannot add documents) that takes upserts and deletes: changed rows are masked in the base
    and their new text is scored by `BM25Index.score_tokens`.

    Every score uses the statistics of the live corpus as it is now (`corpus_stats`: the base's, less the rows
    changed or deleted since, plus the overlay's documents), so the answers do not depend on when the base was
    last rebuilt: an index and a sharded collection of the same tickets (whose shards rebuild at other moments)
    score alike. A base saved without term frequencies (before they were kept) scores with its own statistics.

    `rebuild` returns a fresh base built from the source of truth as of now (the corpus is not kept here), so
    a compaction from a snapshot at change S keeps every change after S: a change the rebuild already holds
    stays in the overlay with the same text, which scores the same.
    """

    def __init__(self, base: BM25Index, rebuild: Callable[[], BM25Index] | None = None) -> None:
        self.rebuild = rebuild
        super().__init__(base)

    @staticmethod
    def _base_ids(base: BM25Index) -> np.ndarray:
        return base.row_ids

    def _reset_overlay(self) -> None:
        self._rows_with: dict[str, set[int]] = {}  # term -> overlay rows holding it: a query scores only those
        self._terms_of: dict[int, set[str]] = {}
        self._len_of: dict[int, int] = {}  # overlay document -> its length in tokens (an empty one counts 1, as
        self._overlay_len = 0  # in a base: bm25s indexes it with a placeholder token), and their sum
        self._version = getattr(self, "_version", 0) + 1
        self._stats_cache: tuple[int, tuple[str, ...], CorpusStats] | None = None
        self._masked: tuple[int, np.ndarray, np.ndarray, int] | None = None  # version, positions, mask, length

    def _overlay_changed(self, rows: list[int]) -> None:
        self._version += 1
        for r in rows:
            self._overlay_len -= self._len_of.pop(r, 0)
            doc = self.changes[r][1]
            if doc is not None:
                self._len_of[r] = len(doc) or 1
                self._overlay_len += self._len_of[r]
        for r in rows:
            for t in self._terms_of.pop(r, ()):
                self._rows_with[t].discard(r)
            doc = self.changes[r][1]
            if doc:
                self._terms_of[r] = set(doc)
                for t in self._terms_of[r]:
                    self._rows_with.setdefault(t, set()).add(r)

    def _encode(self, values: list[list[str]]) -> dict[str, np.ndarray]:
        flat = [t for doc in values for t in doc]
        return {"tokens": np.array(flat if flat else [""], dtype=np.str_)[: len(flat)],
                "offsets": np.cumsum([0] + [len(doc) for doc in values]).astype(np.int64)}

    def _decode(self, arrays: dict[str, np.ndarray], n: int) -> list[list[str]]:
        tokens, offsets = arrays["tokens"].tolist(), arrays["offsets"]
        if len(offsets) != n + 1 or int(offsets[-1]) != len(tokens):
            raise ValueError(f"{len(offsets) - 1} documents, {len(tokens)} tokens; expected {n} documents")
        return [tokens[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]

    def upsert(self, row_ids: Sequence[int], texts: list[str], seq: int = 0) -> None:
        toks = tokenize(texts) if texts else []
        self._put(list(row_ids), toks, [seq] * len(toks))

    def corpus_stats(self, query_tokens: list[str]) -> CorpusStats:
        """The live corpus's statistics for these query terms: exact at every moment (what a shard reports for
        its collection's sum, and what an index scores with)."""
        st = self.base.corpus_stats(query_tokens)
        tf = self.base.tf
        if not self.changes or tf is None:
            return st
        key = tuple(sorted(set(query_tokens)))
        cached = self._stats_cache
        if cached is not None and cached[0] == self._version and cached[1] == key:
            return cached[2]
        pos, masked, masked_len = self._masked_docs()
        df = dict(st.df)
        for t in list(df):
            docs, _ = tf.postings(self.base.model.vocab_dict[t])
            df[t] -= int(masked[docs].sum()) if len(pos) else 0
        for t in key:
            df[t] = df.get(t, 0) + len(self._rows_with.get(t, ()))
        out = CorpusStats(st.n - len(pos) + len(self._len_of), st.total_len - masked_len + self._overlay_len,
                          {t: c for t, c in df.items() if c > 0})
        self._stats_cache = (self._version, key, out)
        return out

    def _masked_docs(self) -> tuple[np.ndarray, np.ndarray, int]:
        """The base documents the overlay masks: their positions, a mask over the base, their total length
        (computed once per change, not per query)."""
        m = self._masked
        if m is None or m[0] != self._version:
            assert self.base.tf is not None
            pos = np.asarray([self.base._pos[r] for r in self.stale], np.int64)
            mask = np.zeros(len(self.base.tf.doc_len), bool)
            mask[pos] = True
            m = self._masked = (self._version, pos, mask, int(self.base.tf.doc_len[pos].sum()))
        return m[1], m[2], m[3]

    def _live_stats(self, query: str, stats: CorpusStats | None) -> CorpusStats | None:
        """`stats` (a whole collection's, given to a shard), or the live corpus's where it differs from the
        base's own (None: the base's, bm25s's own scores)."""
        if stats is not None or not self.changes or self.base.tf is None:
            return stats
        return self.corpus_stats(tokenize([query])[0])

    def search(self, query: str, k: int, allowed: np.ndarray | None = None,
               stats: CorpusStats | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`stats`: a whole collection's statistics (a shard scores with them); default the live corpus's."""
        if not self.changes:
            return self.base.search(query, k, allowed, stats)
        stats = self._live_stats(query, stats)
        parts = [_masked_top(lambda kk: self.base.search(query, kk, allowed, stats), k, self._stale())]
        q = tokenize([query])[0]
        hit: set[int] = set().union(*(self._rows_with.get(t, set()) for t in set(q)))
        rows = np.fromiter(sorted(hit), np.int64, len(hit))
        if allowed is not None:
            rows = rows[np.isin(rows, allowed)]
        if len(rows):
            ds = self.base.score_tokens(q, [self.changes[r][1] or [] for r in rows.tolist()], stats)
            parts.append((ds[ds > 0], rows[ds > 0]))
        return _merge(parts, k)

    def score_rows(self, query: str, row_ids: list[int], stats: CorpusStats | None = None) -> np.ndarray:
        """BM25 scores of these rows (0 for a row the index lacks)."""
        stats = self._live_stats(query, stats)
        out = self.base.score_rows(query, row_ids, stats)
        mine = [(j, self.changes[r][1]) for j, r in enumerate(row_ids) if r in self.changes]
        if mine:
            docs = [d or [] for _, d in mine]
            scores = self.base.score_tokens(tokenize([query])[0], docs, stats)
            out[[j for j, _ in mine]] = scores
        return out

    def compacted(self, snap: Snapshot[BM25Index, list[str]]) -> Compacted[BM25Index]:
        if self.rebuild is None:
            raise TicketsearchError("this BM25 index has no source to be rebuilt from")
        base = self.rebuild()
        return Compacted(base, np.sort(base.row_ids), snap.seq)


@dataclass(frozen=True)
class VectorTable:
    """Row ids (sorted) and their vectors: the base of `RowVectors`."""

    rows: np.ndarray
    vecs: np.ndarray

    def compact(self) -> tuple[np.ndarray, np.ndarray]:
        return self.rows, self.vecs


class RowVectors(Live[VectorTable, np.ndarray]):
    """Vectors keyed by row id that take upserts and deletes (the reranker's cached candidate vectors)."""

    def __init__(self, rows: np.ndarray, vecs: np.ndarray, dtype: np.dtype | type = np.float32) -> None:
        """`dtype` is the storage type (float32, or float16 for half the memory); reads return float32."""
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise ValueError(f"vectors are stored as float32 or float16, not {self.dtype}")
        rows = np.asarray(rows, np.int64)
        vecs = np.asarray(vecs)
        self.dim = vecs.shape[1] if vecs.ndim == 2 else 0
        order = np.argsort(rows, kind="stable")
        super().__init__(VectorTable(rows[order], np.array(vecs, self.dtype).reshape(len(rows), self.dim)[order]))

    @staticmethod
    def _base_ids(base: VectorTable) -> np.ndarray:
        return base.rows

    def _encode(self, values: list[np.ndarray]) -> dict[str, np.ndarray]:
        return _vector_arrays(values, self.dim, self.dtype)

    def _decode(self, arrays: dict[str, np.ndarray], n: int) -> list[np.ndarray]:
        return list(_vectors_from(arrays, n, self.dim).astype(self.dtype))

    def __contains__(self, row_id: int) -> bool:
        change = self.changes.get(int(row_id))
        if change is not None:
            return change[1] is not None
        return bool(_in_sorted(self._members, np.array([int(row_id)]))[0])

    def rows(self) -> np.ndarray:
        return self.ids()

    def get(self, row_ids: list[int]) -> np.ndarray:
        out = np.empty((len(row_ids), self.dim), np.float32)
        at, base_rows = [], []
        for j, r in enumerate(row_ids):
            change = self.changes.get(int(r))
            if change is None:
                at.append(j)
                base_rows.append(int(r))
            elif change[1] is None:
                raise KeyError(r)
            else:
                out[j] = change[1]
        if base_rows:
            want = np.asarray(base_rows, np.int64)
            if not _in_sorted(self._members, want).all():
                raise KeyError(sorted(set(base_rows) - set(self._members.tolist()))[:5])
            out[at] = self.base.vecs[np.searchsorted(self._members, want)]
        return out

    def upsert(self, row_ids: Sequence[int], vecs: np.ndarray, seq: int = 0) -> None:
        vecs = np.asarray(vecs, np.float32).reshape(len(row_ids), self.dim).astype(self.dtype)
        self._put(list(row_ids), list(vecs), [seq] * len(row_ids))

    def compacted(self, snap: Snapshot[VectorTable, np.ndarray]) -> Compacted[VectorTable]:
        rows, vecs = _fold(snap.base.rows, snap.base.vecs, snap)
        return Compacted(VectorTable(rows, vecs), rows, snap.seq)

    def compact(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, vectors) in row-id order with the overlay folded in, for saving a whole base."""
        if not self.changes:
            return self.base.compact()
        return self.compacted(self.snapshot(0)).base.compact()
