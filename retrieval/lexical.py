"""BM25 over the ticket text (bm25s), with the title counted twice. Persisted as a directory of numpy/JSON parts."""

from __future__ import annotations

import json
from pathlib import Path

import bm25s
import numpy as np

from index_data.atomic import atomic_write_dir, recover_dir
from index_data.errors import TicketsearchError

BM25_DIRNAME = "bm25"
TITLE_REPEAT = 2


def _stemmer():  # noqa: ANN202
    try:
        import Stemmer  # PyStemmer

        return Stemmer.Stemmer("english").stemWords
    except ImportError:  # pragma: no cover - PyStemmer is a dependency
        return None


_STEM = _stemmer()


def bm25_text(title: str, body: str) -> str:
    return "\n".join([title] * TITLE_REPEAT + [body])


def tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, stopwords="en", stemmer=_STEM, return_ids=False, show_progress=False)


class BM25Index:
    def __init__(self, model: bm25s.BM25, row_ids: np.ndarray) -> None:
        self.model = model
        self.row_ids = np.asarray(row_ids, dtype=np.int64)
        self._pos = {int(r): i for i, r in enumerate(self.row_ids)}

    @classmethod
    def build(cls, row_ids: np.ndarray, texts: list[str], k1: float = 1.2, b: float = 0.75) -> BM25Index:
        model = bm25s.BM25(k1=k1, b=b, method="lucene")
        tokens = tokenize(texts) if texts else []
        # bm25s cannot index an empty corpus or an all-stopword document; give those a placeholder token
        tokens = [t if t else ["__empty__"] for t in tokens] or [["__empty__"]]
        model.index(tokens, show_progress=False)
        return cls(model, np.asarray(row_ids, np.int64))

    def __len__(self) -> int:
        return len(self.row_ids)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every indexed document (aligned with `row_ids`)."""
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
        s_pos = s > 0  # a document sharing no query term is not a lexical match
        s, ids = s[s_pos], ids[s_pos]
        kk = min(k, len(s))
        if kk == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        top = np.argpartition(-s, kk - 1)[:kk]
        order = top[np.lexsort((ids[top], -s[top]))]
        return s[order], ids[order]

    def save(self, index_dir: Path) -> None:
        def write(tmp: Path) -> None:
            self.model.save(str(tmp), show_progress=False)
            np.save(tmp / "row_ids.npy", self.row_ids, allow_pickle=False)

        atomic_write_dir(Path(index_dir) / BM25_DIRNAME, write)

    @classmethod
    def load(cls, index_dir: Path) -> BM25Index:
        path = Path(index_dir) / BM25_DIRNAME
        recover_dir(path)
        if not (path / "row_ids.npy").is_file():
            raise TicketsearchError(f"{path}: no BM25 index here (rebuild with 'ticketsearch ingest')")
        try:
            model = bm25s.BM25.load(str(path), load_corpus=False)
            row_ids = np.load(path / "row_ids.npy", allow_pickle=False)
        except (OSError, ValueError, json.JSONDecodeError) as exc:
            raise TicketsearchError(f"{path}: unreadable BM25 index ({exc})") from None
        return cls(model, row_ids)
