"""Short free-text queries: the reranker learns from short queries cut from its training duplicates, and
search asks a few words of free text the way training cut them."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.parts import load_manifest, open_store
from ticketsearch.pipeline.search import SearchPipeline
from ticketsearch.pipeline.training import build_train_data, mine, run_rerankers, time_split
from ticketsearch.requests import now
from ticketsearch.rerank.pair_features import KIND_COLUMNS, by_query_kind, pair_dim
from ticketsearch.rerank.train import TrainConfig
from ticketsearch.retrieval.eval_index import load_eval_inputs
from ticketsearch.retrieval.query_kinds import FULL, QueryKind, is_short_query

TITLE = QueryKind.parse("title")


def test_pair_inputs_by_query_kind() -> None:
    mat = np.arange(2 * (KIND_COLUMNS + 3), dtype=np.float32).reshape(2, -1)
    full, short = by_query_kind(mat, False), by_query_kind(mat, True)
    assert full.shape == short.shape == (2, 2 * KIND_COLUMNS + 3)
    assert np.array_equal(full[:, : mat.shape[1]], mat) and not full[:, mat.shape[1]:].any()
    assert not short[:, :KIND_COLUMNS].any() and np.array_equal(short[:, -KIND_COLUMNS:], mat[:, :KIND_COLUMNS])
    assert np.array_equal(short[:, KIND_COLUMNS : mat.shape[1]], mat[:, KIND_COLUMNS:])
    assert is_short_query("", "app crashes when I open it", False)
    assert not is_short_query("App crash", "on open", False) and not is_short_query("", "app crash", True)
    assert not is_short_query("", "word " * 40, False)


def test_training_on_title_queries_ranks_them_better(trained_index: Path, tmp_path: Path, encoder,
                                                      settings) -> None:
    """On generated tickets, title-only queries (validation, asked at their duplicate's date) rank better with
    a reranker trained on whole tickets and their titles than in first-stage order, and better than with one
    trained on whole tickets alone; whole-ticket queries keep their gain. (Generated duplicates arrive within
    weeks of each other: the time gap is most of what a title alone leaves to learn from.) On a copy of the
    trained index: its token states are cached, and the reranker installed there must stay as it is."""
    idx = tmp_path / "idx"
    shutil.copytree(trained_index, idx)
    d = IndexDir(idx)
    installed = {p.name: p.read_bytes() for p in d.reranker_path.iterdir()}
    assert installed
    with open_store(d, read_only=False) as store:
        inp = load_eval_inputs(idx, store, encoder)
        tb, vb = time_split(inp, 0.6, 0.2)
        fusion = load_manifest(d).fusion
        runs = {}
        for name, kinds in (("full", [FULL]), ("full+title", [FULL, TITLE])):
            runs[name] = run_rerankers(store, inp, encoder, idx, fusion, settings.fusion_depth, tb, vb,
                                       tmp_path / name, variants=["rerank-cross+pair"],
                                       tcfg=TrainConfig(epochs=3, patience=3, seed=0), progress=False,
                                       log=lambda m: None, train_kinds=kinds, eval_kinds=[FULL, TITLE],
                                       install=False)
    # a measurement leaves the index as it was: the installed reranker untouched
    assert {p.name: p.read_bytes() for p in d.reranker_path.iterdir()} == installed

    def mrr(name: str, kind: str) -> float:
        return float(runs[name]["kinds"][kind]["valid"]["rerank-cross+pair"]["MRR"])

    first_title = runs["full"]["kinds"]["title"]["first_stage"]["valid"]["MRR"]
    assert runs["full+title"]["kinds"]["title"]["valid"]["rerank-cross+pair"]["queries"] >= 20
    assert mrr("full+title", "title") > first_title + 0.15, (first_title, mrr("full+title", "title"))
    assert mrr("full+title", "title") > mrr("full", "title") + 0.03, (mrr("full", "title"), mrr("full+title", "title"))
    assert mrr("full+title", "full") > runs["full"]["kinds"]["full"]["first_stage"]["valid"]["MRR"] + 0.15
    cfg = (tmp_path / "full+title" / "rerank-cross+pair" / "config.json").read_text()
    assert '"query_kinds": true' in cfg


@pytest.mark.parametrize("text", [False, True])
def test_short_query_pair_inputs_equal_serving_ones(trained_index: Path, encoder, settings, text: bool) -> None:
    """A title query mined for training gets the pair inputs search computes for the same words asked as free
    text at the same time: one vector for the dense and title cosines, BM25 on the words, no fields, laid out
    as a short query (queries through the fp32 encoder here, as training encodes them); `text`: the text
    columns too (its one vector against both of a candidate's, BM25 of its words as its title)."""
    s = SearchPipeline(trained_index, settings=settings, encoder=encoder, query_encoder=encoder)
    try:
        inp = load_eval_inputs(trained_index, s.store, encoder)
        tb, vb = time_split(inp, 0.6, 0.2)
        mined = mine(s.store, inp, s.manifest.fusion, settings.fusion_depth, tb, vb, encoder=encoder,
                     train_kinds=[TITLE], eval_kinds=[TITLE])
        assert mined.trains_short and mined.short
        data, _, _ = build_train_data(s.store, inp, encoder, trained_index, mined, with_pair=True, progress=False,
                                      text=text)
        assert data.pair is not None and s.reranker is not None
        s.reranker.query_kinds = True  # serving's layout for a model trained on short queries
        s.reranker.text = text  # type: ignore[union-attr]  # and one trained with the text columns
        ev, checked = inp.ev, 0
        for r in mined.valid_by_kind["title"][:5]:
            sq = mined.short[r.query - len(ev)]
            created = ev.created[sq.ticket].astype("datetime64[s]").astype(datetime)
            q = s.query(sq.text, before=created, method="hybrid")
            assert q.short and q.values == {} and q.created == created  # dated as training dates it
            cands = s.first_stage(q, "hybrid", 100)
            mined_rows = [int(ev.row_ids[c]) for c in r.candidates]
            same = [i for i, (a, b) in enumerate(zip(cands.row_ids, mined_rows)) if a == b]
            assert len(same) >= 0.8 * len(mined_rows), (len(same), len(mined_rows))
            s.complete(q, cands, 100)
            rows = {t.row_id: t for t in s.store.get_rows(cands.row_ids)}
            served = s.pair_inputs(q, cands, [rows[x] for x in cands.row_ids])
            assert served is not None and served.shape[1] == pair_dim(s.reranker.schema, True, text=text)
            trained = np.stack([data.pair(r.query, c) for c in r.candidates])
            assert np.allclose(served[same], trained[same], atol=1e-3), np.abs(served[same] - trained[same]).max(0)
            checked += len(same)
        assert checked > 0
        # a query without a date is asked at the time of the request, short or not (never a zero gap)
        for q in (s.query("charged twice", method="hybrid"), s.query("charged twice", title="Billing",
                                                                     method="hybrid")):
            assert q.created == now() or (now() - q.created).total_seconds() == 3600  # an hour may turn
    finally:
        s.close()
