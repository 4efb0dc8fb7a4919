"""BM25 over the ticket text (bm25s), with the title counted twice. Persisted as a directory of numpy/JSON parts."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import bm25s
import numpy as np

from ticketsearch.atomic import atomic_write_dir, recover_dir
from ticketsearch.errors import TicketsearchError

TITLE_REPEAT = 2
STATS_FILENAME = "stats.json"


def _stemmer():  # noqa: ANN202
    try:
        import Stemmer  # PyStemmer

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


def lexical_matches(scores: np.ndarray) -> np.ndarray:
    """Which BM25 scores are matches: a document sharing no query term is not one (search and evaluation)."""
    return np.asarray(scores) > 0


def tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, stopwords="en", stemmer=_STEM, return_ids=False, show_progress=False)


class BM25Index:
    def __init__(self, model: bm25s.BM25, row_ids: np.ndarray, avgdl: float | None = None) -> None:
        self.model = model
        self.row_ids = np.asarray(row_ids, dtype=np.int64)
        self._pos = {int(r): i for i, r in enumerate(self.row_ids)}
        self.avgdl = avgdl  # mean document length in tokens (None for indexes saved before it was kept)
        self._last = threading.local()  # the last query's scores, per thread (search, then score_rows)
        indptr = np.asarray(model.scores["indptr"])
        self._df = np.diff(indptr).astype(np.int64)  # documents per vocabulary token id

    @classmethod
    def build(cls, row_ids: np.ndarray, texts: list[str], k1: float = 1.2, b: float = 0.75) -> BM25Index:
        model = bm25s.BM25(k1=k1, b=b, method="lucene")
        tokens = tokenize(texts) if texts else []
        # bm25s cannot index an empty corpus or an all-stopword document; give those a placeholder token
        tokens = [t if t else ["__empty__"] for t in tokens] or [["__empty__"]]
        model.index(tokens, show_progress=False)
        return cls(model, np.asarray(row_ids, np.int64), float(np.mean([len(t) for t in tokens])))

    def __len__(self) -> int:
        return len(self.row_ids)

    def score_tokens(self, query_tokens: list[str], docs: list[list[str]]) -> np.ndarray:
        """BM25 scores of documents outside the index (tokenised), with this index's statistics.

        Used for tickets written since the index was built: idf and average length come from the indexed
        corpus, so the scores are comparable with `scores` (they equal a rebuild's up to those statistics).
        """
        n = max(len(self.row_ids), 1)
        avgdl = self.avgdl or 1.0
        k1, b = self.model.k1, self.model.b
        out = np.zeros(len(docs), dtype=np.float32)
        terms = set(query_tokens)
        for j, doc in enumerate(docs):
            counts: dict[str, int] = {}
            for t in doc:
                if t in terms:
                    counts[t] = counts.get(t, 0) + 1
            if not counts:
                continue
            dl = len(doc) or 1
            total = 0.0
            for t, tf in counts.items():
                tid = self.model.vocab_dict.get(t)
                df = int(self._df[tid]) if tid is not None and tid < len(self._df) else 0
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                total += idf * tf / (k1 * ((1 - b) + b * dl / avgdl) + tf)
            out[j] = total
        return out

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every indexed document (aligned with `row_ids`). The last query's array is kept
        (per thread), so that `score_rows` after `search` for the same query costs no second pass."""
        last = getattr(self._last, "item", None)
        if last is not None and last[0] == query:
            return last[1]
        out = self._scores(query)
        self._last.item = (query, out)
        return out

    def score_rows(self, query: str, row_ids: list[int]) -> np.ndarray:
        """BM25 scores of these indexed rows (0 for a row the index lacks)."""
        s = self.scores(query)
        return np.array([s[self._pos[r]] if r in self._pos else 0.0 for r in row_ids], np.float32)

    def _scores(self, query: str) -> np.ndarray:
        toks = [t for t in tokenize([query])[0] if t in self.model.vocab_dict]
        if not toks or len(self.row_ids) == 0:
            return np.zeros(len(self.row_ids), dtype=np.float32)
        return np.asarray(self.model.get_scores(toks), dtype=np.float32)[: len(self.row_ids)]

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, row ids), best first, restricted to `allowed` row ids when given."""
        s = self.scores(query)
        ids = self.row_ids
        if allowed is not None:
            mask = np.isin(ids, allowed)
            s, ids = s[mask], ids[mask]
        s_pos = lexical_matches(s)
        s, ids = s[s_pos], ids[s_pos]
        kk = min(k, len(s))
        if kk == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        top = np.argpartition(-s, kk - 1)[:kk]
        order = top[np.lexsort((ids[top], -s[top]))]
        return s[order], ids[order]

    def save(self, path: Path) -> None:
        def write(tmp: Path) -> None:
            self.model.save(str(tmp), show_progress=False)
            np.save(tmp / "row_ids.npy", self.row_ids, allow_pickle=False)
            (tmp / STATS_FILENAME).write_text(json.dumps({"avgdl": self.avgdl, "num_docs": len(self.row_ids)}))

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
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise TicketsearchError(f"{path}: unreadable BM25 index ({exc})") from None
        return cls(model, row_ids, stats.get("avgdl"))
