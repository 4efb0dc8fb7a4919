"""BM25 over the ticket text (bm25s), with the title counted twice. Persisted as a directory of numpy/JSON parts."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from scipy.sparse import coo_matrix

from ticketsearch.atomic import atomic_write_dir, recover_dir
from ticketsearch.errors import TicketsearchError

from .ties import top_k

TITLE_REPEAT = 2
STATS_FILENAME = "stats.json"
TF_PARTS = ("tf_indptr", "tf_docs", "tf_counts", "doc_len")  # term frequencies, kept by a shard's index


def _stemmer():  # noqa: ANN202
    try:

        return Stemmer.Stemmer("english").stemWords
    except ImportError:  # pragma: no cover - PyStemmer is a dependency
        return None


_STEM = _stemmer()


def stems(words: list[str]) -> list[str]:
    """The words' Snowball stems, lowercased, as BM25 indexes them."""
    lower = [w.lower() for w in words]
    return list(_STEM(lower)) if _STEM is not None else lower


def bm25_text(title: str, body: str) -> str:
    return "\n".join([title] * TITLE_REPEAT + [body])


def title_query(title: str, bm25_query: str) -> str:
    """What BM25 of a query's title scores (a reranker's pair input): its title, or its whole BM25 text when it has
    none (free text)."""
    return title.strip() or bm25_query


def lexical_matches(scores: np.ndarray) -> np.ndarray:
    """Which BM25 scores are matches: a document sharing no query term is not one (search and evaluation)."""
    return np.asarray(scores) > 0


def tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, stopwords="en", stemmer=_STEM, return_ids=False, show_progress=False)


@dataclass(frozen=True)
class CorpusStats:
    """BM25's statistics of a corpus for one query: documents, their total length in tokens, and each query
    term's document frequency. A sharded collection sums its shards' (`combine`) so that every shard scores
    with the whole collection's statistics, as one index would."""

    n: int
    total_len: int
    df: dict[str, int]

    @property
    def avgdl(self) -> float:
        return self.total_len / self.n if self.n else 1.0

    @staticmethod
    def combine(parts: Iterable[CorpusStats]) -> CorpusStats:
        n, total = 0, 0
        df: dict[str, int] = {}
        for p in parts:
            n, total = n + p.n, total + p.total_len
            for t, c in p.df.items():
                df[t] = df.get(t, 0) + c
        return CorpusStats(n, total, df)


def idf(df: int, n: int) -> float:
    """Lucene's idf, as bm25s computes it."""
    return math.log(1 + (n - df + 0.5) / (df + 0.5))


def term_scores(tf: np.ndarray, dl: np.ndarray, idf_t: float, avgdl: float, k1: float, b: float) -> np.ndarray:
    """One query term's BM25 contribution to documents holding it `tf` times in `dl` tokens, in float32 as
    bm25s computes its stored scores (so that scores summed from these equal its own)."""
    tf32 = np.asarray(tf, np.float32)
    norm = (k1 * ((1 - b) + b * np.asarray(dl, np.float64) / avgdl)).astype(np.float32)
    return np.float32(idf_t) * (tf32 / (norm + tf32))


@dataclass(frozen=True)
class TermFreqs:
    """Each vocabulary term's documents (positions in the index) and counts, term-major, and every document's
    length: what scoring with another corpus's statistics needs (bm25s keeps only its own scores)."""

    indptr: np.ndarray  # [vocab + 1]
    docs: np.ndarray  # positions
    counts: np.ndarray  # term frequency at each position
    doc_len: np.ndarray  # [documents] tokens per document

    @classmethod
    def of(cls, tokens: list[list[str]], vocab: dict[str, int]) -> TermFreqs:

        rows: list[int] = []
        cols: list[int] = []
        vals: list[int] = []
        for d, doc in enumerate(tokens):
            counts: dict[int, int] = {}
            for t in doc:
                counts[vocab[t]] = counts.get(vocab[t], 0) + 1
            cols.extend(counts)
            vals.extend(counts.values())
            rows.extend([d] * len(counts))
        m = coo_matrix((np.asarray(vals, np.float32), (np.asarray(rows, np.int64), np.asarray(cols, np.int64))),
                       shape=(len(tokens), len(vocab))).tocsc()
        m.sort_indices()
        return cls(m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data.astype(np.float32),
                   np.asarray([len(t) for t in tokens], np.int32))

    def postings(self, term_id: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.indptr[term_id]), int(self.indptr[term_id + 1])
        return self.docs[a:b], self.counts[a:b]


class BM25Index:
    def __init__(self, model: bm25s.BM25, row_ids: np.ndarray, avgdl: float | None = None,
                 tf: TermFreqs | None = None) -> None:
        self.model = model
        self.tf = tf  # kept by a shard's index: scoring with the whole collection's statistics needs it
        self.row_ids = np.asarray(row_ids, dtype=np.int64)
        self._pos = {int(r): i for i, r in enumerate(self.row_ids)}
        self.avgdl = avgdl  # mean document length in tokens (None for indexes saved before it was kept)
        self._last = threading.local()  # the last query's scores, per thread (search, then score_rows)
        indptr = np.asarray(model.scores["indptr"])
        self._df = np.diff(indptr).astype(np.int64)  # documents per vocabulary token id

    @classmethod
    def build(cls, row_ids: np.ndarray, texts: list[str], k1: float = 1.2, b: float = 0.75,
              keep_tf: bool = False) -> BM25Index:
        """`keep_tf`: keep the term frequencies too (a shard's index: `scores` with a collection's `CorpusStats`)."""
        model = bm25s.BM25(k1=k1, b=b, method="lucene")
        tokens = tokenize(texts) if texts else []
        # bm25s cannot index an empty corpus or an all-stopword document; give those a placeholder token
        tokens = [t if t else ["__empty__"] for t in tokens] or [["__empty__"]]
        model.index(tokens, show_progress=False)
        tf = TermFreqs.of(tokens, model.vocab_dict) if keep_tf else None
        return cls(model, np.asarray(row_ids, np.int64), float(np.mean([len(t) for t in tokens])), tf)

    def __len__(self) -> int:
        return len(self.row_ids)

    def score_tokens(self, query_tokens: list[str], docs: list[list[str]],
                     stats: CorpusStats | None = None) -> np.ndarray:
        """BM25 scores of documents outside the index (tokenised), with this index's statistics (or `stats`).

        Used for tickets written since the index was built: idf and average length come from the indexed
        corpus, so the scores are comparable with `scores` (they equal a rebuild's up to those statistics).
        A query term counts as often as it occurs in the query, as in bm25s's own scores.
        """
        st = stats or self.corpus_stats(query_tokens)
        k1, b = self.model.k1, self.model.b
        out = np.zeros(len(docs), dtype=np.float32)
        if not query_tokens or not docs:
            return out
        dl = np.array([len(d) or 1 for d in docs], np.int64)
        counted = [_counts(d, set(query_tokens)) for d in docs]
        n = max(st.n, 1)
        per_term: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for t in dict.fromkeys(query_tokens):  # a term no indexed ticket holds (df 0) weighs most, as in a rebuild
            tf = np.array([c.get(t, 0) for c in counted], np.float32)
            has = tf > 0
            per_term[t] = has, term_scores(tf[has], dl[has], idf(st.df.get(t, 0), n), st.avgdl, k1, b)
        for t in query_tokens:  # each occurrence, in order (bm25s's sum), each term computed once
            has, sc = per_term[t]
            out[has] += sc
        return out

    def corpus_stats(self, query_tokens: list[str]) -> CorpusStats:
        """This index's statistics for these query terms (the indexed corpus: rows changed since are not in it)."""
        df: dict[str, int] = {}
        for t in set(query_tokens):
            tid = self.model.vocab_dict.get(t)
            if tid is not None and tid < len(self._df):
                df[t] = int(self._df[tid])
        n = len(self.row_ids)
        total = int(self.tf.doc_len[:n].sum()) if self.tf is not None else round((self.avgdl or 1.0) * n)
        return CorpusStats(n, total, df)

    def scores(self, query: str, stats: CorpusStats | None = None) -> np.ndarray:
        """BM25 score of every indexed document (aligned with `row_ids`), with this index's statistics or, given
        `stats`, a whole collection's (a shard of it: needs the term frequencies). The last query's array is kept
        (per thread), so that `score_rows` after `search` for the same query costs no second pass."""
        last = getattr(self._last, "item", None)
        if last is not None and last[0] == query and last[1] == stats:
            return last[2]
        if stats is None and self.tf is not None:  # one arithmetic for every index and shard: the same floats
            toks = tokenize([query])[0]
            out = self._scores_with(toks, self.corpus_stats(toks))
        else:
            out = self._scores(query) if stats is None else self._scores_with(tokenize([query])[0], stats)
        self._last.item = (query, stats, out)
        return out

    def score_rows(self, query: str, row_ids: list[int], stats: CorpusStats | None = None) -> np.ndarray:
        """BM25 scores of these indexed rows (0 for a row the index lacks)."""
        s = self.scores(query, stats)
        return np.array([s[self._pos[r]] if r in self._pos else 0.0 for r in row_ids], np.float32)

    def _scores(self, query: str) -> np.ndarray:
        toks = [t for t in tokenize([query])[0] if t in self.model.vocab_dict]
        if not toks or len(self.row_ids) == 0:
            return np.zeros(len(self.row_ids), dtype=np.float32)
        return np.asarray(self.model.get_scores(toks), dtype=np.float32)[: len(self.row_ids)]

    def _scores_with(self, query_tokens: list[str], stats: CorpusStats) -> np.ndarray:
        """Scores from the term frequencies with the collection's statistics, summed in query-term order in
        float32 as bm25s sums its own (one index of the same tickets gives the same numbers)."""
        if self.tf is None:
            raise TicketsearchError("this BM25 index keeps no term frequencies (a shard's index does: rebuild it)")
        n = len(self.row_ids)
        out = np.zeros(n, np.float32)
        k1, b = self.model.k1, self.model.b
        per_term: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for t in query_tokens:  # each occurrence, in order (bm25s's sum), each term computed once
            tid = self.model.vocab_dict.get(t)
            if tid is None or not stats.df.get(t):
                continue
            if t not in per_term:
                docs, tf = self.tf.postings(tid)
                keep = docs < n
                docs, tf = docs[keep], tf[keep]
                per_term[t] = docs, term_scores(tf, self.tf.doc_len[docs], idf(stats.df[t], stats.n), stats.avgdl,
                                                k1, b)
            docs, sc = per_term[t]
            out[docs] += sc  # a term's documents are distinct
        return out

    def search(self, query: str, k: int, allowed: np.ndarray | None = None,
               stats: CorpusStats | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, row ids), best first, restricted to `allowed` row ids when given."""
        s = self.scores(query, stats)
        ids = self.row_ids
        if allowed is not None:
            mask = np.isin(ids, allowed)
            s, ids = s[mask], ids[mask]
        s_pos = lexical_matches(s)
        s, ids = s[s_pos], ids[s_pos]
        kk = min(k, len(s))
        if kk == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        return top_k(s, ids, kk)

    def save(self, path: Path) -> None:
        def write(tmp: Path) -> None:
            self.model.save(str(tmp), show_progress=False)
            np.save(tmp / "row_ids.npy", self.row_ids, allow_pickle=False)
            (tmp / STATS_FILENAME).write_text(json.dumps({"avgdl": self.avgdl, "num_docs": len(self.row_ids)}))
            if self.tf is not None:
                for name in TF_PARTS:
                    np.save(tmp / f"{name}.npy", getattr(self.tf, name.removeprefix("tf_")), allow_pickle=False)

        atomic_write_dir(Path(path), write)

    @classmethod
    def load(cls, path: Path) -> BM25Index:
        path = Path(path)
        recover_dir(path)
        if not (path / "row_ids.npy").is_file():
            raise TicketsearchError(f"{path}: no BM25 index here (rebuild with 'ticketsearch ingest')")
        try:
            model = bm25s.BM25.load(str(path), load_corpus=False)
            row_ids = np.load(path / "row_ids.npy", allow_pickle=False)
            stats_path = path / STATS_FILENAME
            stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
            if int(model.scores["num_docs"]) != max(len(row_ids), 1):
                raise ValueError(f"{model.scores['num_docs']} documents scored but {len(row_ids)} row ids")
            tf = None
            if (path / "tf_indptr.npy").is_file():
                parts = {n.removeprefix("tf_"): np.load(path / f"{n}.npy", allow_pickle=False) for n in TF_PARTS}
                tf = TermFreqs(**parts)
                if len(tf.doc_len) != max(len(row_ids), 1) or len(tf.docs) != len(tf.counts):
                    raise ValueError(f"term frequencies of {len(tf.doc_len)} documents for {len(row_ids)} row ids")
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise TicketsearchError(f"{path}: unreadable BM25 index ({exc})") from None
        return cls(model, row_ids, stats.get("avgdl"), tf)


def _counts(doc: list[str], terms: set[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in doc:
        if t in terms:
            out[t] = out.get(t, 0) + 1
    return out
