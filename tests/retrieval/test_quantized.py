"""Quantised query encoders stay close to the fp32 encoder (retrieval/quantized.py).

Thresholds come from `scripts/bench_encode.py` on 300 hadoop tickets and their titles (docs/encode_results.md),
single-query cosine to fp32, worst case: ONNX fp32 1.0000 (so > 0.9999: float rounding only); ONNX int8 0.989
(threshold 0.97: margin for other CPUs' int8 kernels, yet [CLS] pooling instead of mean pooling gives 0.51-0.58
on these texts, and truncating the long one at 128 instead of 256 tokens 0.964); torch int8 per-channel 0.959 (0.93);
torch int8 per-tensor 0.884 (0.85). Besides the cosine, each quantised query must still find its own fp32
vector first among the others'."""

from __future__ import annotations

import numpy as np
import pytest

TEXTS = [
    "NameNode fails to start after upgrade: NullPointerException in FSImage.loadFSImage",
    (
        "DataNode heartbeat times out under heavy load\nThe DataNode stops sending heartbeats when the disk "
        "is saturated; the NameNode marks it dead after 10 minutes and re-replicates every block."
    ),
    "Add a configuration key for the YARN ResourceManager web UI port",
    "Typo in the hadoop fs -ls usage message",
    # longer than max_seq_length tokens: truncation must match the fp32 encoder's
    "Job history server leaks file handles\n"
    + (
        "java.io.IOException: Too many open files at "
        "org.apache.hadoop.mapreduce.v2.hs.HistoryFileManager.scanDirectory(HistoryFileManager.java:1042) "
    )
    * 20,
]


def _check(vecs: np.ndarray, ref: np.ndarray, min_cos: float | None) -> None:
    assert vecs.dtype == np.float32
    assert vecs.shape == ref.shape
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    cos = (vecs * ref).sum(axis=1)
    if min_cos is not None:
        assert cos.min() > min_cos, cos
    # every query's nearest fp32 vector among these texts is its own
    assert (np.argmax(vecs @ ref.T, axis=1) == np.arange(len(ref))).all()


@pytest.fixture(scope="module")
def fp32_single(encoder) -> np.ndarray:
    return np.vstack([encoder.encode([t]) for t in TEXTS])


def test_torch_int8_query_encoder(encoder, fp32_single: np.ndarray) -> None:
    from ticketsearch.retrieval.quantized import build_query_encoder

    for kind in ("torch-int8", "torch-int8-pc"):
        q = build_query_encoder(encoder, kind)
        assert q.dim == encoder.dim and q.key != encoder.key
        _check(np.vstack([q.encode([t]) for t in TEXTS]), fp32_single, 0.85 if kind == "torch-int8" else 0.93)
        assert q.encode([]).shape == (0, encoder.dim)
    # the fp32 model itself is untouched by quantising a copy
    np.testing.assert_allclose(encoder.encode(TEXTS[:1]), fp32_single[:1], atol=1e-5)


def test_onnx_query_encoders_and_query_encoder_for(encoder, fp32_single: np.ndarray, tmp_path) -> None:
    """Search's query encoder: the fp32 encoder itself, or the cached int8 ONNX model, whose one pass gives
    both the pooled vector and the token states that the reranker attends over. One export serves every check
    (exporting takes ~20 s): `query_encoder_for` makes it, `build_query_encoder` reuses it."""
    import onnxruntime  # noqa: F401  # required dependencies (pyproject): a missing one fails, never skips
    import onnxscript  # noqa: F401  # torch's ONNX exporter needs it

    from ticketsearch.retrieval.encoder import Encoder
    from ticketsearch.retrieval.quantized import (
        ONNX_FP32,
        ONNX_INT8,
        ONNX_META,
        LiteQueryEncoder,
        OnnxQueryEncoder,
        build_query_encoder,
        onnx_query_dir,
        prepare_query_encoder,
        query_encoder_for,
    )

    fp32 = Encoder(settings=encoder.settings.model_copy(update={"query_encoder": "fp32"}))
    assert query_encoder_for(fp32) is fp32

    cache = tmp_path / "cache"
    settings = encoder.settings.model_copy(update={"query_encoder": "onnx-int8", "cache_dir": cache})
    int8 = Encoder(settings=settings)
    said: list[str] = []
    assert prepare_query_encoder(int8, said.append) > 0 and len(said) == 2 and "exporting" in said[0]  # ingest's
    prepared = onnx_query_dir(int8)
    assert prepared is not None
    ready = (prepared / ONNX_INT8).stat().st_mtime_ns
    assert prepare_query_encoder(int8, said.append) == 0.0 and len(said) == 2  # once per model on a machine
    q = query_encoder_for(int8)  # the first search finds it ready: nothing exported again
    assert isinstance(q, LiteQueryEncoder) and q.kind == "onnx-int8"  # the torch-free one (`onnx_query`)
    model_dir = q.model_dir
    assert model_dir == prepared and (model_dir / ONNX_INT8).stat().st_mtime_ns == ready
    assert model_dir.parent == cache / "onnx"
    assert sorted(p.name for p in model_dir.iterdir()) == sorted([ONNX_FP32, ONNX_INT8, ONNX_META])
    assert [p.name for p in model_dir.parent.iterdir()] == [model_dir.name]  # the temporary sibling was renamed
    mtimes = {f: (model_dir / f).stat().st_mtime_ns for f in (ONNX_FP32, ONNX_INT8)}
    again = query_encoder_for(int8)  # a second service start reuses the machine's export
    assert again.model_dir == q.model_dir

    tb = q.encode_with_tokens(TEXTS[:1])
    n = int(tb.attention_mask[0].sum())
    assert tb.tokens.shape == (1, n, encoder.dim) and tb.input_ids.shape == (1, n)
    np.testing.assert_allclose(tb.pooled, q.encode(TEXTS[:1]), atol=1e-5)
    # the token states are the model's: their masked mean, normalised, is the pooled vector
    mean = tb.tokens[0].mean(axis=0)
    np.testing.assert_allclose(mean / np.linalg.norm(mean), tb.pooled[0], atol=1e-5)
    _check(np.vstack([q.encode([t]) for t in TEXTS]), fp32_single, 0.97)

    # the ONNX kinds of build_query_encoder, from the same (reused) export
    q32 = build_query_encoder(encoder, "onnx-fp32", model_dir, threads=1)
    _check(np.vstack([q32.encode([t]) for t in TEXTS]), fp32_single, 0.9999)
    # batched (padded) fp32 ONNX equals the fp32 encoder's batch
    np.testing.assert_allclose(q32.encode(TEXTS), encoder.encode(TEXTS), atol=1e-4)
    q8 = build_query_encoder(encoder, "onnx-int8", model_dir, threads=1)
    assert isinstance(q8, OnnxQueryEncoder)
    assert {f: (model_dir / f).stat().st_mtime_ns for f in (ONNX_FP32, ONNX_INT8)} == mtimes  # not re-exported
    _check(np.vstack([q8.encode([t]) for t in TEXTS]), fp32_single, 0.97)

    # the torch-free encoder (the tokenizers package, numpy pooling) equals the transformers-tokenizer one: the
    # same ids, mask and token types (one text and a padded batch, the long one truncated), the same vectors
    for texts in ([t] for t in TEXTS), [TEXTS]:
        for batch in texts:
            want = {k: v.numpy() for k, v in int8.tokenize(batch).items()}
            got = q.tokenize(batch)
            assert sorted(got) == sorted(want)
            for name in want:
                np.testing.assert_array_equal(got[name], want[name])
    assert q.tokenize([TEXTS[-1]])["input_ids"].shape[1] == int8.max_seq_length  # truncated, as the model is
    np.testing.assert_allclose(np.vstack([q.encode([t]) for t in TEXTS]),
                               np.vstack([q8.encode([t]) for t in TEXTS]), atol=1e-5)
