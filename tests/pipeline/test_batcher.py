"""The encoder thread merges waiting requests into one pass and hands each its own rows."""

from __future__ import annotations

import threading
import time

import numpy as np

from ticketsearch.pipeline.batcher import BatchedEncoder, EncodeBatcher


def test_waiting_requests_are_merged_and_results_match_solo_passes(encoder) -> None:
    sizes: list[int] = []
    batcher = EncodeBatcher(encoder, max_batch=32, on_batch=sizes.append)
    enc = BatchedEncoder(encoder, batcher)
    texts = [f"ticket {i}: the export of report {i} fails with a timeout" for i in range(8)]
    results: dict[int, object] = {}
    try:
        busy = threading.Thread(target=lambda: enc.encode(["a long ticket " * 200] * 48))
        busy.start()  # keeps the encoder thread busy while the queries queue up behind it
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, enc.encode_with_tokens([texts[i]])))
                   for i in range(len(texts))]
        for t in threads:
            t.start()
        for t in threads + [busy]:
            t.join()
        assert max(sizes) > 1, sizes  # some queries shared one pass
        for i, text in enumerate(texts):
            solo = encoder.encode_with_tokens([text])
            got = results[i]
            n = int(solo.attention_mask[0].sum())
            assert int(got.attention_mask[0].sum()) == n
            assert np.allclose(got.pooled.numpy(), solo.pooled.numpy(), atol=1e-5)
            assert np.allclose(got.tokens[0, :n].numpy(), solo.tokens[0, :n].numpy(), atol=1e-4)
        titles = enc.encode(["refund", "login"])
        assert titles.shape == (2, encoder.dim) and np.allclose(titles, encoder.encode(["refund", "login"]), atol=1e-5)
    finally:
        batcher.close()


def test_an_encoder_failure_reaches_every_waiting_request(encoder) -> None:
    """Six requests wait while a slow pass fails; every one hears of its own pass's failure (none hangs, none
    gets another's rows)."""
    passes: list[int] = []

    class Broken:
        dim = encoder.dim

        def encode_with_tokens(self, texts):  # noqa: ANN001, ANN202
            passes.append(len(texts))
            time.sleep(0.3)  # the others queue up behind this pass
            raise RuntimeError(f"boom on {len(texts)} texts")

    batcher = EncodeBatcher(Broken(), max_batch=32)  # type: ignore[arg-type]  # a stand-in that fails, on purpose
    errors: dict[int, str] = {}

    def ask(i: int) -> None:
        try:
            batcher.submit("tokens", [f"text {i}"])
        except RuntimeError as exc:
            errors[i] = str(exc)

    try:
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
            time.sleep(0.02)
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads), "a waiting request was never answered"
        assert sorted(errors) == list(range(6)) and all("boom" in e for e in errors.values()), errors
        assert len(passes) < 6 and max(passes) > 1, passes  # some waited and shared one failing pass
    finally:
        batcher.close()
