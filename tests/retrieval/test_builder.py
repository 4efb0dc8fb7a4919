"""Building the first stage from a store: an interrupted encode keeps what it finished (issue 28 item 11)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ticketsearch.index_data.records import text_hash, ticket_text
from ticketsearch.index_data.store import TicketStore, read_texts
from ticketsearch.index_dir import IndexDir
from ticketsearch.retrieval import builder


class Interrupted:
    """The real encoder, with Ctrl-C pressed during its `calls`-th pass."""

    def __init__(self, encoder: Any, calls: int) -> None:
        self.encoder, self.left = encoder, calls
        self.key, self.dim = encoder.key, encoder.dim

    def encode(self, texts: list[str], **kw: Any) -> np.ndarray:
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt
        return self.encoder.encode(texts, **kw)


def test_an_interrupted_encode_keeps_the_parts_it_finished(built_index: Path, tmp_path: Path, encoder: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(built_index, tmp_path / "idx")
    monkeypatch.setattr(builder, "CACHE_EVERY", 40)
    with TicketStore(IndexDir(tmp_path / "idx").store_path) as store:
        st = read_texts(store)
        texts = [f"{ticket_text(store.schema, t, b)} (reworded)" for t, b in zip(st.titles, st.bodies)][:150]
        with pytest.raises(KeyboardInterrupt):
            builder.embed_texts(store, Interrupted(encoder, calls=3), "k", texts, False, "encode")
        kept = store.cached_embeddings("k", [text_hash(t) for t in texts])
        assert len(kept) == 80  # two parts of 40 finished before the third was interrupted
        counting = Interrupted(encoder, calls=-1)  # never interrupted
        vecs, encoded, _ = builder.embed_texts(store, counting, "k", texts, False, "encode")
        assert encoded == 70 and counting.left == -3  # the rest only, in two parts
        want = encoder.encode(texts[:3])
        assert np.allclose(vecs[:3], want, atol=1e-5)
