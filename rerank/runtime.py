"""A trained reranker at inference time: item vectors, scores and calibrated duplicate probabilities.

On a CPU with `runtime="onnx"`, a search's part of the work (the query's own item vector and the head over the
cached candidate vectors) runs through the exported ONNX parts (`onnx_parts`) and needs no torch: the model's
weights load, with torch, only for what the parts do not cover (a candidate vector the index lacks, an
explanation of candidates' attention, a GPU, or the first export on this machine).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ticketsearch.errors import TicketsearchError
from ticketsearch.index_data.features import FeatureSpace
from ticketsearch.index_data.schema import Schema
from ticketsearch.retrieval.encoder import resolve_device

from .calibration import platt, stored_threshold
from .lambdamart import LambdaMART, ltr_inputs
from .onnx_parts import OnnxRerankParts, parts_current, parts_dir
from .pair_features import check_pair_width
from .persist import checked_meta, load_reranker
from .token_cache import Tokens, pad_arrays

if TYPE_CHECKING:
    from .model import PairModel

log = logging.getLogger(__name__)


class Reranker:
    """A trained reranker. `runtime="onnx"` (CPU only) runs the per-query parts (the query's own item vector
    and the head) through ONNX Runtime (`onnx_parts`), exported once per machine into `cache_dir` (by training
    and ingest; here too where they are missing, with a log line); candidate vectors, and everything on a GPU,
    stay in torch. Falls back to torch, with a warning, if the parts cannot be used."""

    needs_tokens = True  # the query's token states and the candidates' vectors
    text = False  # no text columns among its pair inputs (`pair_features.TEXT_COLUMNS`: linear models only)

    def __init__(
        self, directory: Path, device: str = "auto", runtime: str = "torch", cache_dir: Path | None = None
    ) -> None:
        self.directory = Path(directory)
        self.device_name = resolve_device(device)
        self.meta = checked_meta(self.directory)
        self._model: PairModel | None = None
        self.cfg: dict[str, Any] = dict(self.meta["model"])
        self.features = FeatureSpace.from_dict(self.meta["features"])
        self.schema: Schema = self.features.schema
        self.checksum: str = self.meta["checksum"]
        cal = self.meta.get("calibration", {"a": 1.0, "b": 0.0})
        self.cal_a, self.cal_b = float(cal["a"]), float(cal["b"])
        self.pair_width = int(self.cfg.get("pair_dim", 0))
        self.text_dim = int(self.cfg.get("text_dim", 384))
        self.uses_pair = self.pair_width > 0
        self.query_kinds = bool(self.cfg.get("query_kinds"))  # pair inputs laid out by query kind
        self.code = bool(self.cfg.get("code"))  # pair inputs end with the code terms' agreement
        if self.uses_pair:
            check_pair_width(self.directory, self.pair_width, self.schema, self.query_kinds, self.code)
        self.ltr = LambdaMART.load(self.directory)  # a LambdaMART stage on the fusion model's score and pair inputs
        if self.ltr is not None and not self.uses_pair:
            raise TicketsearchError(f"{self.directory}: a LambdaMART stage needs a model with pair inputs")
        self.fast: OnnxRerankParts | None = None
        if runtime == "onnx" and self.device_name == "cpu" and cache_dir is not None:
            try:
                self.fast = self._onnx_parts(Path(cache_dir))
            except Exception as exc:  # noqa: BLE001 - an optional speed-up; torch gives the same scores
                log.warning("reranker: ONNX Runtime parts unavailable (%s); using torch", exc)

    def _onnx_parts(self, cache_dir: Path) -> OnnxRerankParts:
        directory = parts_dir(cache_dir, self.checksum)
        if not parts_current(directory, self.checksum):  # training and ingest export them beforehand
            from .onnx_export import ensure_exported  # deferred: torch

            log.info("reranker %s: exporting its ONNX parts (once per model on this machine)", self.name)
            ensure_exported(self.model, self.checksum, directory)
        return OnnxRerankParts(directory, self.cfg)

    @property
    def model(self) -> PairModel:
        """The torch model, loaded on first use (a search through the ONNX parts never needs it)."""
        if self._model is None:
            import torch  # deferred: torch

            with torch.inference_mode(False):  # ordinary tensors, whatever mode the first caller is in
                self._model, _ = load_reranker(self.directory, device=self.device_name)
        return self._model

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.directory.name))

    def item_vectors(
        self, tokens: Any, mask: Any, values: list[dict[str, Any]], side: str
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Item vectors [B, D] and attention [B, T] (None for models without) of padded token states [B, T, D]
        and their mask [B, T] (numpy arrays or torch tensors)."""
        feats = self.features.matrix(values)
        if self.fast is not None and self.fast.has_source and side == "source" and tokens.shape[0] == 1:
            return self.fast.source_vector(np.asarray(tokens, np.float32), np.asarray(mask), feats)
        import torch  # deferred: what the ONNX parts do not cover

        device, model = torch.device(self.device_name), self.model
        t = torch.as_tensor(tokens, dtype=torch.float32).to(device)
        m = torch.as_tensor(mask).to(device)
        with torch.inference_mode():
            v, attn = model.item_vectors(t, m, torch.from_numpy(feats).to(device), side)  # type: ignore[arg-type]  # side is "source" or "target" (callers pass the literals as str)
        return v.float().cpu().numpy(), None if attn is None else attn.float().cpu().numpy()

    def vectors_from_cache(
        self, items: list[Tokens], values: list[dict[str, Any]], side: str, batch: int = 64
    ) -> np.ndarray:
        out = []
        for b in range(0, len(items), batch):
            toks, mask = pad_arrays(items[b : b + batch])
            out.append(self.item_vectors(toks, mask, values[b : b + batch], side)[0])
        return np.concatenate(out) if out else np.zeros((0, self.text_dim), np.float32)

    def score(self, source: np.ndarray, targets: np.ndarray, pair: np.ndarray | None) -> np.ndarray:
        """Scores for one source vector [D] against target vectors [N, D]: the fusion model's logits, or its
        LambdaMART stage's scores of them and the pair inputs (calibrated by the model's own Platt fit)."""
        logits = self.logits(source, targets, pair)
        if self.ltr is None:
            return logits
        assert pair is not None  # checked at load: the stage needs a model with pair inputs
        return self.ltr.predict(ltr_inputs(pair, logits))

    def logits(self, source: np.ndarray, targets: np.ndarray, pair: np.ndarray | None) -> np.ndarray:
        """The fusion model's logits for one source vector [D] against target vectors [N, D]."""
        if self.fast is not None:
            return self.fast.score(source, targets, pair)
        import torch  # deferred: the torch runtime

        device, model = torch.device(self.device_name), self.model
        s = torch.from_numpy(np.asarray(source, np.float32)).reshape(1, -1).to(device)
        t = torch.from_numpy(np.asarray(targets, np.float32)).to(device)
        p = None if pair is None else torch.from_numpy(pair).to(device)
        with torch.inference_mode():
            return model.score(s, t, p).float().cpu().numpy()

    def probability(self, logits: np.ndarray) -> np.ndarray:
        """Platt-calibrated probability that a candidate is a duplicate (fitted on validation data)."""
        return platt(logits, self.cal_a, self.cal_b)

    def duplicate_threshold(self, precision: float | None = None) -> float | None:
        """The duplicate-probability threshold chosen on validation data for a target precision.

        None when validation reached no such precision. Raises KeyError for a precision the model did not store.
        """
        return stored_threshold(self.meta, precision)


def prepare_reranker_parts(directory: Path, cache_dir: Path, say: Any = print) -> float:
    """Export the installed reranker's ONNX parts now, if this machine has none yet (training and ingest call
    this, so that no search pays for it). Returns the seconds spent (0.0: they were there)."""
    meta = checked_meta(Path(directory))
    target = parts_dir(cache_dir, meta["checksum"])
    if parts_current(target, meta["checksum"]):
        return 0.0
    from .onnx_export import ensure_exported  # deferred: torch

    say("exporting the reranker's ONNX parts (once per model on this machine) ...")
    t0 = time.perf_counter()
    model, _ = load_reranker(Path(directory))
    ensure_exported(model, meta["checksum"], target)
    return time.perf_counter() - t0
