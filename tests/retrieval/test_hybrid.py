"""Fusion retrieves what each single method finds when the other misses it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ticketsearch.index_data.ingest import ingest_file
from ticketsearch.index_data.schema import load_schema
from ticketsearch.index_data.store import TicketStore
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.ingest import build_index
from ticketsearch.pipeline.search import SearchPipeline
from ticketsearch.retrieval.eval_index import fusion_fn
from ticketsearch.retrieval.evaluation import QueryPool
from ticketsearch.retrieval.fusion import fuse_lists

QUERY = "The analytics dashboard will not load for our team since this morning (ref 7781qzx)"
DOCS = {
    # shares only a rare reference code with the query: BM25 finds it, dense does not rank it high
    "LEX": "Printer driver install fails, ref 7781qzx",
    # a paraphrase with no word in common with the query: dense finds it, BM25 cannot
    "SEM": "Stats panel refuses to appear",
    # semantically close distractors without the code or the query's words
    "D1": "Reports page hangs and never renders charts",
    "D2": "Statistics view remains blank after opening",
    "D3": "Graphs screen freezes on startup",
    "N1": "Invoice emails contain the wrong VAT number",
    "N2": "Password reset link expired too soon",
}


@pytest.fixture(scope="module")
def searcher(tmp_path_factory: pytest.TempPathFactory, encoder, settings):
    root = tmp_path_factory.mktemp("hybrid")
    data = root / "d.jsonl"
    data.write_text("".join(
        json.dumps({"id": k, "title": v, "body": "", "created": f"2024-01-{i + 1:02d}"}) + "\n"
        for i, (k, v) in enumerate(DOCS.items())
    ))
    with TicketStore(IndexDir(root).store_path, schema=load_schema("support")) as store:
        ingest_file(store, data, progress=False)
        build_index(root, store, encoder, "minilm", settings=settings, progress=False)
    s = SearchPipeline(root, settings=settings, encoder=encoder)
    yield s
    s.close()


def test_each_method_misses_what_the_other_finds_and_hybrid_gets_both(searcher: SearchPipeline) -> None:
    # first-stage order (an untrained index would otherwise rerank with the general model)
    dense = [h.id for h in searcher.search(QUERY, k=2, method="dense", rerank=False).hits]
    bm25 = [h.id for h in searcher.search(QUERY, k=2, method="bm25", rerank=False).hits]
    hybrid = [h.id for h in searcher.search(QUERY, k=2, method="hybrid", rerank=False).hits]
    assert "SEM" in dense and "LEX" not in dense, dense
    assert bm25[0] == "LEX" and "SEM" not in bm25, bm25
    assert set(hybrid) == {"LEX", "SEM"}, hybrid


def test_search_fusion_and_evaluation_fusion_agree() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random(50), rng.random(50)
    ids = np.arange(50) * 7
    pool = QueryPool(q=0, pool=np.arange(50), hits=np.zeros(50, bool), scores={"a": a, "b": b})
    for method in ("rrf", "score"):
        arr = fusion_fn({"method": method, "k": 60.0, "weights": {"a": 1.0, "b": 0.5}}, depth=20)(pool)
        la = (np.sort(a)[::-1][:20], ids[np.argsort(-a, kind="stable")][:20])
        lb = (np.sort(b)[::-1][:20], ids[np.argsort(-b, kind="stable")][:20])
        s, got = fuse_lists([la, lb], [1.0, 0.5], method)
        expect = {int(ids[i]): arr[i] for i in range(50) if arr[i] > 0}
        assert {int(i): v for i, v in zip(got, s) if v > 0} == pytest.approx(expect)


def test_rrf_by_hand() -> None:
    s, ids = fuse_lists([(np.array([3.0, 2.0]), np.array([10, 20])), (np.array([9.0]), np.array([20]))], [1.0, 1.0])
    assert list(ids) == [20, 10]
    assert s[0] == pytest.approx(1 / 62 + 1 / 61) and s[1] == pytest.approx(1 / 61)


def test_search_follows_the_fusion_weights_stored_in_the_manifest(searcher: SearchPipeline, settings,
                                                                  encoder) -> None:
    """`experiment` tunes the fusion weights and stores them in the manifest: hybrid search reads them there.
    With only BM25 weighted, hybrid is BM25's order; with only dense, dense's."""
    import shutil

    from ticketsearch.retrieval.manifest import Manifest

    root = searcher.index_dir
    by = {m: [h.id for h in searcher.search(QUERY, k=7, method=m, rerank=False).hits] for m in ("dense", "bm25")}
    assert by["dense"][:2] != by["bm25"][:2]
    for only, weights in (("bm25", {"dense": 0.0, "bm25": 1.0, "title": 0.0, "recency": 0.0}),
                          ("dense", {"dense": 1.0, "bm25": 0.0})):
        copy = root.parent / f"weights-{only}"
        shutil.copytree(root, copy)
        m = Manifest.load(copy)
        m.fusion = {**m.fusion, "weights": weights}
        m.save(copy)
        s = SearchPipeline(copy, settings=settings, encoder=encoder)
        try:
            hybrid = [h.id for h in s.search(QUERY, k=7, method="hybrid", rerank=False).hits]
            assert hybrid[:len(by[only])] == by[only][:len(hybrid)], (only, hybrid, by[only])
            assert hybrid[:2] != by["bm25" if only == "dense" else "dense"][:2]
        finally:
            s.close()
