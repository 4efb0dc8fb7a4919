"""One thread owns the encoder; concurrent requests' texts are micro-batched through it.

Tokenizers are not safe to call from several threads at once, and on a small CPU one forward pass over a
batch of queries is cheaper than the same queries one by one. Requests wait in a queue; the encoder thread
takes the first and every other waiting request of the same kind (up to `max_batch` texts), runs one pass,
and hands each request its own rows. An idle service adds no waiting: a lone query runs at once.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ticketsearch.retrieval.encoder import Encoder, TokenBatch, as_array


@dataclass
class _Job:
    kind: str  # "tokens" or "encode", prefixed "query-" for the query encoder
    texts: list[str]
    future: Future = field(default_factory=Future)


class EncodeBatcher:
    def __init__(self, encoder: Any, max_batch: int = 32, on_batch: Callable[[int], None] | None = None,
                 query_encoder: Any = None) -> None:
        self.encoder = encoder  # indexed tickets (fp32: an `Encoder`, or `shared_models.LazyEncoder`)
        self.query_encoder = query_encoder or encoder  # query texts (settings.query_encoder)
        self.max_batch = max_batch
        self.on_batch = on_batch  # called with the number of requests merged into each pass
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._held: _Job | None = None
        self._thread = threading.Thread(target=self._run, name="encoder", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def submit(self, kind: str, texts: list[str]) -> Any:
        job = _Job(kind, list(texts))
        self._queue.put(job)
        return job.future.result()

    def _next(self, block: bool) -> _Job | None:
        if self._held is not None:
            job, self._held = self._held, None
            return job
        return self._queue.get() if block else self._queue.get_nowait()

    def _run(self) -> None:
        while True:
            job = self._next(block=True)
            if job is None:
                return
            jobs = [job]
            total = len(job.texts)
            while total < self.max_batch:
                try:
                    nxt = self._next(block=False)
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                if nxt.kind != job.kind or total + len(nxt.texts) > self.max_batch:
                    self._held = nxt
                    break
                jobs.append(nxt)
                total += len(nxt.texts)
            self._execute(jobs)

    def _execute(self, jobs: list[_Job]) -> None:
        try:
            if self.on_batch:
                self.on_batch(len(jobs))
            results = encode_jobs(self.encoder, self.query_encoder, jobs[0].kind, [j.texts for j in jobs])
            for j, res in zip(jobs, results):
                j.future.set_result(res)
        except BaseException as exc:  # noqa: BLE001 - every waiting request must hear of the failure
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(exc)


def encode_jobs(encoder: Encoder, query_encoder: Any, kind: str, jobs: list[list[str]]) -> list[Any]:
    """One encoder pass over several requests' texts of one kind; each request's own rows (a TokenBatch cut to
    its longest text for "tokens", vectors for "encode")."""
    texts = [t for j in jobs for t in j]
    enc = query_encoder if kind.startswith("query-") else encoder
    out: list[Any] = []
    start = 0
    if kind.endswith("tokens"):
        tb = enc.encode_with_tokens(texts)
        for j in jobs:
            end = start + len(j)
            width = max(int(as_array(tb.attention_mask[start:end]).sum(axis=1).max()), 1)
            out.append(dataclasses.replace(  # the encoder's own kind: a TokenBatch (torch) or TokenArrays (numpy)
                tb, pooled=tb.pooled[start:end], tokens=tb.tokens[start:end, :width],
                attention_mask=tb.attention_mask[start:end, :width], input_ids=tb.input_ids[start:end, :width],
            ))
            start = end
    else:
        vecs = enc.encode(texts)
        for j in jobs:
            out.append(np.array(vecs[start : start + len(j)]))
            start += len(j)
    return out


class Batcher(Protocol):
    """What encodes for a process's requests (this module's thread, at every door)."""

    def submit(self, kind: str, texts: list[str]) -> Any: ...

    def close(self) -> None: ...


class BatchedEncoder:
    """An Encoder look-alike whose passes go through the batcher (the searchers take it as their encoder)."""

    def __init__(self, encoder: Any, batcher: Batcher, query: bool = False) -> None:
        self._encoder = encoder
        self._batcher = batcher
        self._prefix = "query-" if query else ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def encode_with_tokens(self, texts: list[str]) -> TokenBatch:
        return self._batcher.submit(self._prefix + "tokens", texts)

    def encode(self, texts: list[str], progress: bool = False, desc: str = "encode") -> np.ndarray:
        if not texts:
            return np.zeros((0, self._encoder.dim), np.float32)
        return self._batcher.submit(self._prefix + "encode", texts)
