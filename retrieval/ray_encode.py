"""Encoding on Ray: the texts an index build must encode, spread over a Ray cluster (or a local Ray instance) as a
Ray Data pipeline, one encoder per worker (an actor pool), on GPUs where the cluster has them.

`RayEncoding.fill_cache(store, {key: texts})` is what a build with `--executor ray` calls first
(`retrieval.builder.build_index`): the texts (full tickets and titles) that the store's embedding cache lacks are
encoded on the cluster in one pass, each finished batch written into the cache as it arrives, so an interrupted
build resumes from what was encoded. The build then reads every vector from the cache and goes on as a local
build does (FAISS, BM25, features, manifest): the same vectors and the same index. Where the index has a
reranker installed, `fill_token_cache` encodes the token states its candidate vectors are computed from (the
costliest pass of a re-encode) on the cluster too, and the build recomputes the candidate vectors from them.

Optional: `pip install 'ticketsearch[ray]'`. Nothing imports Ray unless `--executor ray` is asked for.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from tqdm import tqdm

from ticketsearch.errors import TicketsearchError
from ticketsearch.index_data.records import text_hash
from ticketsearch.settings import Settings

BATCH = 64  # texts per Ray Data batch (a worker encodes it in settings.encode_batch_size chunks)
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TICKETSEARCH_CACHE_DIR")


class EncodeBatch:
    """The Ray Data UDF: one encoder per worker, loaded once, encoding each batch of {"hash", "text"}."""

    def __init__(self, model_spec: str, settings: dict[str, Any], threads: int) -> None:
        import torch  # deferred: torch

        from ticketsearch.retrieval.encoder import Encoder  # deferred: torch

        torch.set_num_threads(max(1, threads))
        self.encoder = Encoder(model_spec, settings=Settings(**settings))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        return {"key": batch["key"], "hash": batch["hash"], "vec": self.encoder.encode(texts)}


class EncodeTokens:
    """The Ray Data UDF for token states: one encoder per worker; each text's states (fp16, real tokens only)
    and token ids, as `TokenCache.ensure` stores them."""

    def __init__(self, model_spec: str, settings: dict[str, Any], threads: int) -> None:
        import torch  # deferred: torch

        from ticketsearch.retrieval.encoder import Encoder  # deferred: torch

        torch.set_num_threads(max(1, threads))
        self.encoder = Encoder(model_spec, settings=Settings(**settings))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch  # deferred: torch

        with torch.inference_mode():
            tb = self.encoder.encode_with_tokens([str(t) for t in batch["text"]])
        states = tb.tokens.float().cpu().numpy().astype(np.float16)
        lengths = tb.attention_mask.sum(1).cpu().numpy()
        ids = tb.input_ids.cpu().numpy().astype(np.int32)
        toks, tids = np.empty(len(lengths), dtype=object), np.empty(len(lengths), dtype=object)
        toks[:] = [states[i, :n] for i, n in enumerate(lengths)]
        tids[:] = [ids[i, :n] for i, n in enumerate(lengths)]
        return {"hash": batch["hash"], "states": toks, "ids": tids}


class RayEncoding:
    """A connection to Ray for one build: `address` None starts a local instance (`num_cpus` of it), "auto" or
    an address joins an existing cluster."""

    def __init__(self, model_spec: str, settings: Settings, address: str | None = None,
                 num_cpus: int | None = None, workers: int | None = None) -> None:
        try:
            import ray  # deferred: Ray
        except ImportError:
            raise TicketsearchError("--executor ray needs Ray: pip install 'ticketsearch[ray]'") from None
        self.ray = ray
        self.model_spec, self.settings = model_spec, settings
        env = {k: os.environ[k] for k in OFFLINE_ENV if k in os.environ}
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # our progress bar says what matters
        if not ray.is_initialized():
            ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                     log_to_driver=False, runtime_env={"env_vars": env}, configure_logging=False)
            self._started = True
        else:
            self._started = False
        res = ray.cluster_resources()
        self.gpus = int(res.get("GPU", 0))
        cpus = max(1, int(res.get("CPU", 1)))
        self.workers = workers or (self.gpus if self.gpus else cpus)

    def describe(self) -> str:
        where = f"{self.gpus} GPU(s)" if self.gpus else "CPUs"
        return f"Ray: {self.workers} encoder worker(s) on {where}"

    def fill_cache(self, store: Any, jobs: dict[str, list[str]], progress: bool = True) -> dict[str, int]:
        """Encode, in one pass over the cluster, the texts of each cache key (`jobs`: key -> texts) that the
        store's embedding cache lacks, writing each finished batch into the cache as it arrives (a build
        interrupted here resumes from what was written). Returns how many texts each key encoded."""
        import ray.data  # deferred: Ray, pyarrow

        items = []
        counts = {}
        for key, texts in jobs.items():
            unique = {text_hash(t): t for t in texts}
            cached = store.cached_embeddings(key, list(unique))
            missing = [h for h in unique if h not in cached]
            counts[key] = len(missing)
            items += [{"key": key, "hash": h, "text": unique[h]} for h in missing]
        if not items:
            return counts
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # ours below
        ctx.print_on_execution_start = False
        threads = (self.settings.threads or 1) if self.gpus else 1  # a CPU worker holds one CPU
        out = ray.data.from_items(items).map_batches(
            EncodeBatch, fn_constructor_args=(self.model_spec, self.settings.model_dump(), threads), batch_size=BATCH,
            concurrency=self.workers,
            num_gpus=1 if self.gpus else 0, num_cpus=0 if self.gpus else 1,
        )  # a dead worker is restarted and its batch retried: Ray Data's actor pools do so by default (tested)
        with tqdm(total=len(items), desc="encode (ray)", unit=" texts", disable=not progress, mininterval=0.5) as bar:
            for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
                vecs = np.asarray(np.stack(list(batch["vec"])), dtype=np.float32)  # rows of one tensor column
                keys = [str(k) for k in batch["key"]]
                for key in dict.fromkeys(keys):
                    sel = [i for i, k in enumerate(keys) if k == key]
                    store.put_embeddings(key, [str(batch["hash"][i]) for i in sel], vecs[sel])
                bar.update(len(keys))
        return counts

    def fill_token_cache(self, cache: Any, hashes: list[str], texts: list[str], progress: bool = True,
                         shard_size: int = 2048) -> int:
        """Encode on the cluster the token states (the reranker's input) of the texts `cache` (a `TokenCache`)
        lacks, in batches of texts of like length as `TokenCache.ensure` makes them; each `shard_size` finished
        texts are written as one cache shard (an interrupted pass resumes from them). Returns how many."""
        import ray.data  # deferred: Ray, pyarrow

        todo = {h: t for h, t in zip(hashes, texts) if h not in cache}
        if not todo:
            return 0
        items = [{"hash": h, "text": t} for h, t in sorted(todo.items(), key=lambda kv: -len(kv[1]))]
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        threads = (self.settings.threads or 1) if self.gpus else 1
        out = ray.data.from_items(items).map_batches(
            EncodeTokens, fn_constructor_args=(self.model_spec, self.settings.model_dump(), threads),
            batch_size=self.settings.encode_batch_size if self.gpus else 32, concurrency=self.workers,
            num_gpus=1 if self.gpus else 0, num_cpus=0 if self.gpus else 1,
        )
        got: tuple[list[str], list[np.ndarray], list[np.ndarray]] = ([], [], [])
        with tqdm(total=len(items), desc="token states (ray)", unit=" texts", disable=not progress,
                  mininterval=0.5) as bar:
            for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
                got[0].extend(str(h) for h in batch["hash"])
                got[1].extend(np.asarray(x, np.float16) for x in batch["states"])
                got[2].extend(np.asarray(x, np.int32) for x in batch["ids"])
                bar.update(len(batch["hash"]))
                if len(got[0]) >= shard_size:
                    cache.put(*got)
                    got = ([], [], [])
        cache.put(*got)
        return len(items)

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
