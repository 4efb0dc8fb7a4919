"""An on-disk cache of frozen-encoder token states (fp16), keyed by text hash, in shards of numpy files.

Training reads token states from here, so epochs never re-encode. Each shard holds three arrays:
`hashes` (fixed-width bytes), `offsets` (start, length) and the concatenated fp16 `tokens` [N, D] with
their `ids` (token ids, for explanations). Shards are written atomically and never modified.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from ticketsearch.atomic import atomic_write_npy

if TYPE_CHECKING:
    import torch


@dataclass
class Tokens:
    states: np.ndarray  # [T, D] fp16, real tokens only ([CLS] ... [SEP])
    ids: np.ndarray  # [T] int32


EncodeFn = Callable[[list[str]], tuple[Any, Any, Any]]  # tokens, mask, input_ids (torch tensors)


class TokenCache:
    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._where: dict[str, tuple[int, int, int]] = {}  # hash -> (shard, start, length)
        self._shards: list[tuple[np.ndarray, np.ndarray]] = []  # (tokens memmap, ids)
        for path in sorted(self.dir.glob("shard-*.hashes.npy")):
            self._open(path.name.split(".")[0])

    def _open(self, stem: str) -> None:
        hashes = np.load(self.dir / f"{stem}.hashes.npy", allow_pickle=False)
        offsets = np.load(self.dir / f"{stem}.offsets.npy", allow_pickle=False)
        tokens = np.load(self.dir / f"{stem}.tokens.npy", mmap_mode="r", allow_pickle=False)
        ids = np.load(self.dir / f"{stem}.ids.npy", mmap_mode="r", allow_pickle=False)
        k = len(self._shards)
        self._shards.append((tokens, ids))
        for h, (start, length) in zip(hashes, offsets):
            self._where[h.decode()] = (k, int(start), int(length))

    def __contains__(self, h: str) -> bool:
        return h in self._where

    def get(self, h: str) -> Tokens:
        k, start, length = self._where[h]
        tokens, ids = self._shards[k]
        return Tokens(np.asarray(tokens[start : start + length]), np.asarray(ids[start : start + length]))

    def ensure(
        self, hashes: Sequence[str], texts: Sequence[str], encode: EncodeFn, batch_size: int = 32,
        shard_size: int = 2048, progress: bool = True,
    ) -> int:
        """Encode and store every (hash, text) not cached yet. Returns how many were encoded."""
        todo: dict[str, str] = {}
        for h, t in zip(hashes, texts):
            if h not in self._where and h not in todo:
                todo[h] = t
        if not todo:
            return 0
        items = sorted(todo.items(), key=lambda kv: -len(kv[1]))
        with tqdm(total=len(items), desc="token states", unit=" tickets", disable=not progress, mininterval=0.5) as bar:
            for s in range(0, len(items), shard_size):
                chunk = items[s : s + shard_size]
                toks: list[np.ndarray] = []
                tids: list[np.ndarray] = []
                for b in range(0, len(chunk), batch_size):
                    part = chunk[b : b + batch_size]
                    hidden, mask, input_ids = encode([t for _, t in part])
                    states = hidden.float().cpu().numpy().astype(np.float16)
                    lengths = mask.sum(1).cpu().numpy()
                    for i, n in enumerate(lengths):
                        toks.append(states[i, :n])
                        tids.append(input_ids[i, :n].cpu().numpy().astype(np.int32))
                    bar.update(len(part))
                self._write_shard([h for h, _ in chunk], toks, tids)
        return len(items)

    def put(self, hashes: list[str], toks: list[np.ndarray], tids: list[np.ndarray]) -> None:
        """Store token states encoded elsewhere (on Ray: `retrieval.ray_encode`) as one new shard."""
        if hashes:
            self._write_shard(hashes, toks, tids)

    def _write_shard(self, hashes: list[str], toks: list[np.ndarray], tids: list[np.ndarray]) -> None:
        stem = f"shard-{len(self._shards):05d}"
        lengths = np.array([len(t) for t in toks], dtype=np.int64)
        offsets = np.stack([np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths], axis=1)
        arrays = {
            "tokens": np.concatenate(toks).astype(np.float16),
            "ids": np.concatenate(tids).astype(np.int32),
            "offsets": offsets,
        }
        arrays["hashes"] = np.array([h.encode() for h in hashes])
        # the hashes file is written last: a shard without it is ignored (an interrupted write)
        for name, arr in arrays.items():
            atomic_write_npy(self.dir / f"{stem}.{name}.npy", arr)
        self._open(stem)


def pad_arrays(items: Sequence[Tokens]) -> tuple[np.ndarray, np.ndarray]:
    """Stack variable-length token states into [B, T, D] fp32 and a [B, T] int64 mask (numpy)."""
    t = max(len(x.states) for x in items)
    d = items[0].states.shape[1]
    out = np.zeros((len(items), t, d), dtype=np.float32)
    mask = np.zeros((len(items), t), dtype=np.int64)
    for i, x in enumerate(items):
        out[i, : len(x.states)] = x.states
        mask[i, : len(x.states)] = 1
    return out, mask


def pad_batch(items: Sequence[Tokens], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """`pad_arrays` as torch tensors on `device` (training)."""
    import torch  # deferred: training's side

    out, mask = pad_arrays(items)
    return torch.from_numpy(out).to(device), torch.from_numpy(mask).to(device)
