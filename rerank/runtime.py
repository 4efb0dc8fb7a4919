"""A trained reranker at inference time: item vectors, scores and calibrated duplicate probabilities."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ticketsearch.errors import TicketsearchError
from ticketsearch.index_data.features import FeatureSpace
from ticketsearch.index_data.schema import Schema

from .calibration import platt, stored_threshold
from .lambdamart import LambdaMART, ltr_inputs
from .onnx_parts import OnnxRerankParts
from .pair_features import pair_dim
from .persist import load_reranker, torch_device
from .token_cache import Tokens, pad_batch

log = logging.getLogger(__name__)


class Reranker:
    """A trained reranker. `runtime="onnx"` (CPU only) runs the per-query parts (the query's own item vector
    and the head) through ONNX Runtime (`onnx_parts`), exported once per machine into `cache_dir`; candidate
    vectors, and everything on a GPU, stay in torch. Falls back to torch, with a warning, if that fails."""

    needs_tokens = True  # the query's token states and the candidates' vectors

    def __init__(
        self, directory: Path, device: str = "auto", runtime: str = "torch", cache_dir: Path | None = None
    ) -> None:
        self.directory = Path(directory)
        self.device = torch_device(device)
        self.model, self.meta = load_reranker(self.directory, device=str(self.device))
        self.features = FeatureSpace.from_dict(self.meta["features"])
        self.schema: Schema = self.features.schema
        self.checksum: str = self.meta["checksum"]
        cal = self.meta.get("calibration", {"a": 1.0, "b": 0.0})
        self.cal_a, self.cal_b = float(cal["a"]), float(cal["b"])
        self.uses_pair = self.model.cfg.pair_dim > 0
        self.query_kinds = bool(self.model.cfg.query_kinds)  # pair inputs laid out by query kind
        expected = pair_dim(self.schema, self.query_kinds)
        if self.uses_pair and self.model.cfg.pair_dim != expected:
            raise TicketsearchError(
                f"{self.directory}: this reranker was trained with {self.model.cfg.pair_dim} pair inputs and this "
                f"version computes {expected}: retrain it ('ticketsearch train')"
            )
        self.ltr = LambdaMART.load(self.directory)  # a LambdaMART stage on the fusion model's score and pair inputs
        if self.ltr is not None and not self.uses_pair:
            raise TicketsearchError(f"{self.directory}: a LambdaMART stage needs a model with pair inputs")
        self.fast: OnnxRerankParts | None = None
        if runtime == "onnx" and self.device.type == "cpu" and cache_dir is not None:
            try:
                self.fast = OnnxRerankParts(self.model, self.checksum, cache_dir)
            except Exception as exc:  # noqa: BLE001 - an optional speed-up; torch gives the same scores
                log.warning("reranker: ONNX Runtime parts unavailable (%s); using torch", exc)

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.directory.name))

    @torch.inference_mode()
    def item_vectors(
        self, tokens: torch.Tensor, mask: torch.Tensor, values: list[dict[str, Any]], side: str
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if self.fast is not None and self.fast.has_source and side == "source" and tokens.shape[0] == 1:
            v_np, a_np = self.fast.source_vector(tokens.float().numpy(), mask.numpy(), self.features.matrix(values))
            return v_np, a_np
        feats = torch.from_numpy(self.features.matrix(values)).to(self.device)
        v, attn = self.model.item_vectors(tokens.to(self.device), mask.to(self.device), feats, side)  # type: ignore[arg-type]  # side is "source" or "target" (callers pass the literals as str)
        return v.float().cpu().numpy(), None if attn is None else attn.float().cpu().numpy()

    def vectors_from_cache(
        self, items: list[Tokens], values: list[dict[str, Any]], side: str, batch: int = 64
    ) -> np.ndarray:
        out = []
        for b in range(0, len(items), batch):
            toks, mask = pad_batch(items[b : b + batch])
            out.append(self.item_vectors(toks, mask, values[b : b + batch], side)[0])
        return np.concatenate(out) if out else np.zeros((0, self.model.cfg.text_dim), np.float32)

    def score(self, source: np.ndarray, targets: np.ndarray, pair: np.ndarray | None) -> np.ndarray:
        """Scores for one source vector [D] against target vectors [N, D]: the fusion model's logits, or its
        LambdaMART stage's scores of them and the pair inputs (calibrated by the model's own Platt fit)."""
        logits = self.logits(source, targets, pair)
        if self.ltr is None:
            return logits
        assert pair is not None  # checked at load: the stage needs a model with pair inputs
        return self.ltr.predict(ltr_inputs(pair, logits))

    @torch.inference_mode()
    def logits(self, source: np.ndarray, targets: np.ndarray, pair: np.ndarray | None) -> np.ndarray:
        """The fusion model's logits for one source vector [D] against target vectors [N, D]."""
        if self.fast is not None:
            return self.fast.score(source, targets, pair)
        s = torch.from_numpy(np.asarray(source, np.float32)).reshape(1, -1).to(self.device)
        t = torch.from_numpy(np.asarray(targets, np.float32)).to(self.device)
        p = None if pair is None else torch.from_numpy(pair).to(self.device)
        return self.model.score(s, t, p).float().cpu().numpy()

    def probability(self, logits: np.ndarray) -> np.ndarray:
        """Platt-calibrated probability that a candidate is a duplicate (fitted on validation data)."""
        return platt(logits, self.cal_a, self.cal_b)

    def duplicate_threshold(self, precision: float | None = None) -> float | None:
        """The duplicate-probability threshold chosen on validation data for a target precision.

        None when validation reached no such precision. Raises KeyError for a precision the model did not store.
        """
        return stored_threshold(self.meta, precision)
