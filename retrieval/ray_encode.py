"""Encoding on Ray: the texts an index build must encode, spread over a Ray cluster (or a local Ray instance) as a
Ray Data pipeline, one encoder per worker (an actor pool), on GPUs where the cluster has them.

`RayEncoding.fill_cache(store, {key: texts})` is what a build with `--executor ray` calls first
(`retrieval.builder.build_index`): the texts (full tickets and titles) that the store's embedding cache lacks are
encoded on the cluster in one pass, each finished batch written into the cache as it arrives, so an interrupted
build resumes from what was encoded. The build then reads every vector from the cache and goes on as a local
build does (FAISS, BM25, features, manifest): the same vectors and the same index.

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
        import torch

        from ticketsearch.retrieval.encoder import Encoder

        torch.set_num_threads(max(1, threads))
        self.encoder = Encoder(model_spec, settings=Settings(**settings))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        return {"key": batch["key"], "hash": batch["hash"], "vec": self.encoder.encode(texts)}


class RayEncoding:
    """A connection to Ray for one build: `address` None starts a local instance (`num_cpus` of it), "auto" or
    an address joins an existing cluster."""

    def __init__(self, model_spec: str, settings: Settings, address: str | None = None,
                 num_cpus: int | None = None, workers: int | None = None) -> None:
        try:
            import ray
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
        import ray.data

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
        )  # a failed worker is restarted and its batches retried: Ray Data's actor pools do so by default
        with tqdm(total=len(items), desc="encode (ray)", unit=" texts", disable=not progress, mininterval=0.5) as bar:
            for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
                vecs = np.asarray(np.stack(list(batch["vec"])), dtype=np.float32)  # rows of one tensor column
                keys = [str(k) for k in batch["key"]]
                for key in dict.fromkeys(keys):
                    sel = [i for i, k in enumerate(keys) if k == key]
                    store.put_embeddings(key, [str(batch["hash"][i]) for i in sel], vecs[sel])
                bar.update(len(keys))
        return counts

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
