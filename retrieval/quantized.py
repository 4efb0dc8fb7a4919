"""Quantised (or ONNX Runtime) encoders for the QUERY path only.

Indexed documents keep their fp32 embeddings (the store's cache and the FAISS indexes are untouched); a
quantised query encoder only changes how a query text becomes a vector, so its output must stay close to the
fp32 vector of the same text. Every encoder here reuses the fp32 `Encoder`'s tokenizer (same truncation at
`max_seq_length`), mean-pools the last hidden states over the attention mask and L2-normalises, as the
packaged all-MiniLM-L6-v2 pipeline (Transformer -> mean Pooling -> Normalize) does, and returns float32
[n, dim] like `Encoder.encode`.

Kinds (see `build_query_encoder`):

- `torch-int8`: `torch.ao.quantization.quantize_dynamic` of every `nn.Linear` to qint8, per-tensor weight
  scales (torch's default dynamic qconfig).
- `torch-int8-pc`: the same with per-channel weight scales (`per_channel_dynamic_qconfig`).
- `onnx-fp32`: the transformer exported to ONNX (`torch.onnx.export`, dynamo exporter) run by ONNX Runtime.
- `onnx-int8`: that ONNX model through `onnxruntime.quantization.quantize_dynamic` (int8 weights, per
  channel, only MatMuls with a constant weight: the attention's activation x activation MatMuls stay fp32).

ONNX files are written only into the directory the caller passes, built in a temporary sibling directory and
renamed into place (`index_data.atomic.atomic_write_dir`); nothing is pickled. `onnx` and `onnxruntime` (and
`onnxscript` for the export) are optional: they are imported only by the ONNX kinds.

Dynamic quantisation computes activation scales per tensor at run time, so an int8 query's vector depends
slightly on what else is in its batch (padding, other texts). Encode queries one at a time (as search does)
when the exact vector matters.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

from ticketsearch.atomic import atomic_write_dir
from ticketsearch.errors import TicketsearchError

from .encoder import TokenBatch, pooled_unit
from .onnx_query import (
    INPUTS as _INPUTS,
)
from .onnx_query import (
    ONNX_FORMAT,
    ONNX_FP32,
    ONNX_INT8,
    ONNX_META,
    LiteQueryEncoder,
    lite_supported,
    onnx_available,
    onnx_files_current,
    onnx_query_dir_for,
)
from .onnx_runtime import cpu_session, quiet_export

if TYPE_CHECKING:
    from .encoder import Encoder

QUANT_KINDS: tuple[str, ...] = ("torch-int8", "torch-int8-pc", "onnx-fp32", "onnx-int8")


class QueryEncoder(Protocol):
    """What search needs from a query encoder: `encode(texts) -> float32 [n, dim]`, L2-normalised."""

    dim: int
    key: str

    def encode(self, texts: list[str], progress: bool = False, desc: str = "encode") -> np.ndarray: ...


class _PooledQueryEncoder:
    """Shared plumbing: tokenise with the fp32 encoder's tokenizer, batch by length, pool, normalise."""

    kind: str = ""

    def __init__(self, encoder: Encoder) -> None:
        if encoder.device != "cpu":
            raise TicketsearchError(f"quantised query encoders run on the CPU; the encoder is on {encoder.device}")
        self.base = encoder
        self.dim = encoder.dim
        self.name = encoder.name
        self.max_seq_length = encoder.max_seq_length
        self.device = "cpu"
        # Never the fp32 key: vectors from this encoder must not land in the store's embedding cache as if
        # they were the documents' fp32 embeddings.
        self.key = f"{encoder.key}|query-{self.kind}"
        self.batch_size = encoder.settings.encode_batch_size

    def _hidden(self, feats: dict[str, torch.Tensor]) -> np.ndarray:
        raise NotImplementedError

    @property
    def tokenizer(self):  # noqa: ANN201 - the fp32 encoder's tokenizer
        return self.base.tokenizer

    @property
    def settings(self):  # noqa: ANN201 - the fp32 encoder's Settings
        return self.base.settings

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.base.tokenize(texts)

    def encode_with_tokens(self, texts: list[str]) -> TokenBatch:
        """One pass, like `Encoder.encode_with_tokens`: pooled embeddings and the token states they pool."""
        feats = self.base.tokenize(texts)
        hidden = self._hidden(feats)
        mask = feats["attention_mask"]
        return TokenBatch(
            pooled=pooled_unit(torch.from_numpy(hidden).float(), mask.cpu()),
            tokens=torch.from_numpy(np.ascontiguousarray(hidden, dtype=np.float32)),
            attention_mask=mask.cpu(),
            input_ids=feats["input_ids"].cpu(),
        )

    def encode(self, texts: list[str], progress: bool = False, desc: str = "encode") -> np.ndarray:
        """L2-normalised float32 embeddings [len(texts), dim]; length-sorted batches like `Encoder.encode`."""
        del progress, desc  # same signature as Encoder.encode; queries are few, no progress bar
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for i in range(0, len(texts), self.batch_size):
            idx = order[i : i + self.batch_size]
            feats = self.base.tokenize([texts[j] for j in idx])
            hidden = self._hidden(feats)
            out[idx] = pooled_unit(torch.from_numpy(hidden).float(), feats["attention_mask"].cpu()).numpy()
        return out


class TorchInt8QueryEncoder(_PooledQueryEncoder):
    """The encoder's transformer with every `nn.Linear` dynamically quantised to qint8 (torch, eager)."""

    def __init__(self, encoder: Encoder, per_channel: bool = False) -> None:
        self.kind = "torch-int8-pc" if per_channel else "torch-int8"
        super().__init__(encoder)

        qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
        with warnings.catch_warnings():
            # torch 2.13 marks torch.ao.quantization deprecated (moving to torchao) but still ships it.
            warnings.simplefilter("ignore")
            model = copy.deepcopy(_transformer(encoder)).eval()
            self.model = quantize_dynamic(model, {torch.nn.Linear: qconfig}, dtype=torch.qint8)

    @torch.inference_mode()
    def _hidden(self, feats: dict[str, torch.Tensor]) -> np.ndarray:
        return self.model(**feats).last_hidden_state.float().numpy()


class OnnxQueryEncoder(_PooledQueryEncoder):
    """The encoder's transformer run by ONNX Runtime from `model_dir` (exported there on first use)."""

    def __init__(self, encoder: Encoder, model_dir: Path, int8: bool = True, threads: int | None = None) -> None:
        self.kind = "onnx-int8" if int8 else "onnx-fp32"
        super().__init__(encoder)
        self.model_dir = ensure_onnx(encoder, model_dir)
        path = self.model_dir / (ONNX_INT8 if int8 else ONNX_FP32)
        self.threads = int(threads or torch.get_num_threads())
        self.session = cpu_session(path, self.threads)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def _hidden(self, feats: dict[str, torch.Tensor]) -> np.ndarray:
        mask = feats["attention_mask"]
        inputs: dict[str, np.ndarray] = {}
        for name in self.input_names:
            t = feats.get(name)
            if t is None and name == "token_type_ids":
                t = torch.zeros_like(mask)
            if t is None:
                raise TicketsearchError(f"the tokenizer gives no {name!r}, which the ONNX model needs")
            inputs[name] = t.cpu().numpy().astype(np.int64, copy=False)
        return self.session.run(None, inputs)[0]


def build_query_encoder(
    encoder: Encoder, kind: str, model_dir: Path | None = None, threads: int | None = None
) -> QueryEncoder:
    """A query encoder of `kind` (one of QUANT_KINDS) built from the fp32 `encoder`.

    `model_dir` is required for the ONNX kinds: the directory that holds (or will hold) the exported model.
    `threads` is ONNX Runtime's intra-op thread count (default: torch's current count); the torch kinds use
    `torch.set_num_threads` like the fp32 encoder.
    """
    if kind == "torch-int8":
        return TorchInt8QueryEncoder(encoder, per_channel=False)
    if kind == "torch-int8-pc":
        return TorchInt8QueryEncoder(encoder, per_channel=True)
    if kind in ("onnx-fp32", "onnx-int8"):
        if model_dir is None:
            raise TicketsearchError(f"query encoder {kind!r} needs a model directory to export into")
        return OnnxQueryEncoder(encoder, Path(model_dir), int8=kind == "onnx-int8", threads=threads)
    raise TicketsearchError(f"unknown query encoder {kind!r}; expected one of {', '.join(QUANT_KINDS)}")


def _transformer(encoder: Encoder) -> torch.nn.Module:
    """The Hugging Face model inside the sentence-transformers pipeline (module 0)."""
    first = encoder.model[0]
    model = getattr(first, "auto_model", None)
    if model is None:
        raise TicketsearchError("the encoder's first module has no `auto_model`: not a Transformer pipeline")
    return model


def _meta(encoder: Encoder) -> dict[str, Any]:
    import onnxruntime as ort  # deferred: ONNX Runtime

    return {"format": ONNX_FORMAT, "encoder_key": encoder.key, "onnxruntime": ort.__version__,
            "torch": torch.__version__, "files": [ONNX_FP32, ONNX_INT8]}


def onnx_dir_is_current(encoder: Encoder, model_dir: Path) -> bool:
    """True if `model_dir` holds both ONNX files exported from this encoder with the current recipe."""
    return onnx_files_current(encoder.key, model_dir)


def ensure_onnx(encoder: Encoder, model_dir: Path) -> Path:
    """Export the encoder's transformer (fp32 and int8 ONNX) into `model_dir` unless it is already current.

    The directory is produced whole in a temporary sibling and renamed over `model_dir`, so readers see the
    old directory or the new one, never a half-written model. `model_dir` belongs to this function: any other
    files in it are replaced.
    """
    model_dir = Path(model_dir)
    if onnx_dir_is_current(encoder, model_dir):
        return model_dir

    def write(tmp: Path) -> None:
        tmp.chmod(0o755)  # mkdtemp makes it 0700; the final directory should read like any other
        export_onnx(encoder, tmp / ONNX_FP32)
        quantize_onnx_int8(tmp / ONNX_FP32, tmp / ONNX_INT8)
        (tmp / ONNX_META).write_text(json.dumps(_meta(encoder), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    atomic_write_dir(model_dir, write)
    return model_dir


class _HiddenStates(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.last_hidden_state


def export_onnx(encoder: Encoder, path: Path) -> None:
    """Export the transformer (ids, mask, token types -> last hidden state) with dynamic batch and length."""
    model = _HiddenStates(copy.deepcopy(_transformer(encoder)).float().eval())
    feats = encoder.tokenize(["an example ticket title", "a second, longer example ticket body text here"])
    mask = feats["attention_mask"].cpu()
    args = tuple(
        (feats[n].cpu() if n in feats else torch.zeros_like(mask)).to(torch.int64) for n in _INPUTS
    )
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("seq", min=1, max=max(encoder.max_seq_length, 2))
    with quiet_export():
        torch.onnx.export(
            model,
            args,
            str(path),
            input_names=list(_INPUTS),
            output_names=["last_hidden_state"],
            dynamic_shapes={n: {0: batch, 1: seq} for n in _INPUTS},
            dynamo=True,
            external_data=False,
            verbose=False,
        )


def quantize_onnx_int8(src: Path, dst: Path) -> None:
    """ONNX Runtime dynamic int8: per-channel int8 weights for MatMuls whose weight is a constant."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # deferred: ONNX Runtime, ONNX

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a generic "consider pre-processing" warning
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        root.setLevel(level)


log = logging.getLogger(__name__)


def onnx_query_dir(encoder: Encoder) -> Path | None:
    """Where the int8 ONNX query encoder of this encoder lives on this machine (one folder per encoder identity
    under `settings.cache_dir`), or None when queries run through the fp32 encoder (per the settings, the
    device, or a missing ONNX Runtime)."""
    settings = encoder.settings
    if settings.query_encoder == "fp32" or encoder.device != "cpu" or not onnx_available():
        return None
    return onnx_query_dir_for(encoder.key, settings)


def prepare_query_encoder(encoder: Encoder, log: Callable[[str], None] = print) -> float:
    """Export the int8 ONNX query encoder now, if it is not there yet (ingest and training call this, so that no
    search pays for it). Returns the seconds spent (0.0: it was current, or is not used)."""
    model_dir = onnx_query_dir(encoder)
    if model_dir is None or onnx_dir_is_current(encoder, model_dir):
        return 0.0
    log(f"exporting the int8 ONNX query encoder for {encoder.name} (once per model on this machine) ...")
    t0 = time.perf_counter()
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    ensure_onnx(encoder, model_dir)
    seconds = time.perf_counter() - t0
    log(f"query encoder ready in {seconds:.1f}s")
    return seconds


def query_encoder_for(encoder: Encoder) -> Encoder | QueryEncoder | LiteQueryEncoder:
    """The encoder that search should run queries through, per `settings.query_encoder`.

    'onnx-int8' exports the model once per machine into `settings.cache_dir` (keyed by the encoder's
    identity) and runs it with ONNX Runtime: through `onnx_query.LiteQueryEncoder` (no torch at query time)
    for the models it serves, else through this module's `OnnxQueryEncoder` on the fp32 encoder's tokenizer.
    Where ONNX Runtime is missing or the encoder is on a GPU, it returns the fp32 encoder and logs why.
    """
    settings = encoder.settings
    if settings.query_encoder == "fp32":
        return encoder
    if encoder.device != "cpu":
        log.info("query encoder: fp32 on %s (the int8 ONNX path is for the CPU)", encoder.device)
        return encoder
    if not onnx_available():
        log.warning("query encoder: fp32, because onnxruntime is not installed (pip install onnxruntime)")
        return encoder

    model_dir = onnx_query_dir(encoder)
    assert model_dir is not None
    if not onnx_dir_is_current(encoder, model_dir):  # never silent: ingest and training prepare it beforehand
        log.warning("exporting the int8 ONNX query encoder for %s now (once per model on this machine; "
                    "'ticketsearch ingest' does it beforehand)", encoder.name)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    threads = settings.query_threads or torch.get_num_threads()  # torch's count, as set by the entry point
    if lite_supported(encoder.model_dir):  # the search path's own encoder (`onnx_query`), once exported
        ensure_onnx(encoder, model_dir)
        return LiteQueryEncoder(encoder.identity, model_dir, settings, threads=threads)
    return OnnxQueryEncoder(encoder, model_dir, int8=True, threads=threads)
