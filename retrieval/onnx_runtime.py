"""What every ONNX part shares: a CPU ONNX Runtime session with our thread policy, and a quiet exporter.

Used by the int8 query encoder (`retrieval.quantized`) and the reranker's per-query parts (`rerank.onnx_parts`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def cpu_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session: `threads` intra-op threads, one inter-op, full graph optimisation, and no
    busy-waiting between runs (ONNX Runtime's idle threads otherwise spin on the cores that torch and FAISS
    need right after a query pass: measured, the rerank stage took 2x longer)."""
    import onnxruntime as ort  # deferred: ONNX Runtime

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@contextmanager
def quiet_export() -> Iterator[None]:
    """Silence the exporter's and its optimizer's notices ("Skipping constant folding ...", "torchvision is
    not installed"): they are not for users."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
