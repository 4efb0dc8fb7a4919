"""How a process of ours logs: our own lines at the level asked, the libraries' at WARNING unless debugging
(onnx_ir logs dozens of INFO lines per exported model, bm25s DEBUG lines per index)."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CHATTY = ("onnx_ir", "onnxscript", "onnx", "onnxruntime", "bm25s", "sentence_transformers", "transformers",
          "httpx", "httpcore", "faiss", "filelock", "urllib3", "matplotlib", "PIL", "numexpr")


def configure_logging(level: str | int = "INFO") -> None:
    """The root logger at `level`; the chatty libraries' at WARNING (at DEBUG everything shows)."""
    value = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    logging.basicConfig(level=value, format=FORMAT)
    logging.getLogger().setLevel(value)
    for name in CHATTY:
        logging.getLogger(name).setLevel(value if value <= logging.DEBUG else max(value, logging.WARNING))
