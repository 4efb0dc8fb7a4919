"""Model weights shared by every index a process serves: each encoder is loaded once, with one query encoder
and one micro-batching thread, whatever the number of collections that use it.

An engine asks `SharedModels.acquire(index_dir, settings, manifest)` for the encoder its index was built with and
gives it back with `release` when it closes. An encoder no engine holds is kept for reuse (at most `keep_idle`
of them, least recently released dropped first), so that a collection that closes and reopens finds its
model loaded. Every pass through a shared encoder goes through its batcher thread: tokenizers must not be
called from two threads at once.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ticketsearch.errors import TicketsearchError
from ticketsearch.retrieval.encoder import ModelIdentity, model_identity, resolve_model_dir
from ticketsearch.retrieval.onnx_query import lite_query_encoder
from ticketsearch.settings import Settings

from .batcher import BatchedEncoder, Batcher, EncodeBatcher

if TYPE_CHECKING:
    from ticketsearch.index_dir import IndexDir
    from ticketsearch.retrieval.encoder import Encoder
    from ticketsearch.retrieval.manifest import Manifest

log = logging.getLogger("ticketsearch.models")


class LazyEncoder:
    """The fp32 encoder of a model whose queries need none of it (`onnx_query.LiteQueryEncoder` serves them):
    its identity and dimension at once, its weights (torch, sentence-transformers: seconds) loaded by a
    background thread started here, and waited for by the first write that encodes. A service is ready for
    searches before the model is loaded."""

    def __init__(self, model: str, identity: ModelIdentity, settings: Settings, dim: int) -> None:
        self.spec = model
        self.identity = identity
        self.key, self.name, self.model_dir = identity.key, identity.name, identity.model_dir
        self.max_seq_length, self.settings, self.dim, self.device = identity.max_seq_length, settings, dim, "cpu"
        self._lock = threading.Lock()
        self._real: Encoder | None = None
        threading.Thread(target=self._load_quietly, name=f"load-{identity.name}", daemon=True).start()

    def _load_quietly(self) -> None:
        try:
            self.loaded()
        except BaseException as exc:  # noqa: BLE001 - said again to the first caller that needs the model
            log.warning("loading %s failed: %s", self.name, exc)

    def loaded(self) -> Encoder:
        """The encoder itself, loaded once (by the background thread, or by this caller if it comes first)."""
        with self._lock:
            if self._real is None:
                from ticketsearch.retrieval.encoder import Encoder  # deferred: torch, sentence-transformers

                real = Encoder(self.spec, settings=self.settings)
                if real.key != self.key or real.dim != self.dim:
                    raise TicketsearchError(f"{self.name}: the loaded model ({real.key}, {real.dim}) is not the one "
                                            f"its files name ({self.key}, {self.dim})")
                self._real = real
                log.info("loaded %s for writes", self.name)
            return self._real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loaded(), name)


@dataclass
class Loaded:
    """One encoder, its query encoder and the batcher thread that owns both."""

    encoder: Encoder | LazyEncoder
    query_encoder: Any
    batcher: Batcher
    users: int = 0

    @property
    def batched(self) -> BatchedEncoder:
        """The encoder for indexed texts, through the batcher."""
        return BatchedEncoder(self.encoder, self.batcher)

    @property
    def batched_query(self) -> BatchedEncoder:
        """The query encoder, through the batcher."""
        return BatchedEncoder(self.query_encoder, self.batcher, query=True)


class SharedModels:
    def __init__(self, settings: Settings, on_encode_batch: Callable[[int], None] | None = None,
                 keep_idle: int = 2) -> None:
        self.settings = settings
        self.on_encode_batch = on_encode_batch
        self.keep_idle = keep_idle
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}
        self._loaded: dict[tuple[str, int], Loaded] = {}
        self._idle: OrderedDict[tuple[str, int], None] = OrderedDict()  # loaded, held by no engine

    @staticmethod
    def _slot(model: str, max_seq_length: int) -> tuple[str, int]:

        return str(resolve_model_dir(model)), max_seq_length

    def load(self, model: str, max_seq_length: int | None = None) -> Loaded:
        """The encoder `model` (a settings model name or a directory), loaded once; held until `release`."""
        slot = self._slot(model, max_seq_length or self.settings.max_seq_length)
        with self._lock:
            gate = self._loading.setdefault(slot, threading.Lock())
        with gate:  # one thread loads a model; the others wait for it instead of loading it again
            with self._lock:
                have = self._loaded.get(slot)
                if have is not None:
                    have.users += 1
                    self._idle.pop(slot, None)
                    return have
            loaded = self._build(model, slot[1])
            with self._lock:
                loaded.users = 1
                self._loaded[slot] = loaded
            return loaded

    def acquire(self, index_dir: IndexDir, manifest: Manifest) -> Loaded:
        """The encoder an index was built with, checked against the manifest's identity."""
        loaded = self.load(manifest.model, manifest.max_seq_length)
        if loaded.encoder.key != manifest.model_key:
            self.release(loaded)
            raise TicketsearchError(f"{index_dir.root} was built with model {manifest.model_key}; the loaded model "
                                    f"is {loaded.encoder.key}")
        return loaded

    def _build(self, model: str, max_seq_length: int) -> Loaded:

        settings = self.settings.model_copy(update={"max_seq_length": max_seq_length})
        identity = model_identity(model, max_seq_length, settings.cache_dir)
        query_encoder: Any = lite_query_encoder(identity, settings)
        encoder: Encoder | LazyEncoder
        if query_encoder is not None:  # queries need no torch: the fp32 model loads beside the service
            encoder = LazyEncoder(model, identity, settings, query_encoder.dim)
        else:
            from ticketsearch.retrieval.encoder import Encoder  # deferred: torch, sentence-transformers
            from ticketsearch.retrieval.quantized import query_encoder_for

            encoder = Encoder(model, settings=settings)
            query_encoder = query_encoder_for(encoder)
        log.info("loaded %s (query encoder: %s)", encoder.name, getattr(query_encoder, "kind", "fp32"))
        batcher = EncodeBatcher(encoder, self.settings.encode_max_batch, on_batch=self.on_encode_batch,
                                query_encoder=query_encoder)
        return Loaded(encoder, query_encoder, batcher)

    def release(self, loaded: Loaded) -> None:
        drop: list[Loaded] = []
        with self._lock:
            loaded.users -= 1
            if loaded.users > 0:
                return
            slot = next((s for s, v in self._loaded.items() if v is loaded), None)
            if slot is None:
                return
            self._idle[slot] = None
            while len(self._idle) > self.keep_idle:
                old, _ = self._idle.popitem(last=False)
                drop.append(self._loaded.pop(old))
        for gone in drop:
            gone.batcher.close()

    def loaded_count(self) -> int:
        with self._lock:
            return len(self._loaded)

    def close(self) -> None:
        with self._lock:
            items = list(self._loaded.values())
            self._loaded.clear()
            self._idle.clear()
        for loaded in items:
            loaded.batcher.close()
