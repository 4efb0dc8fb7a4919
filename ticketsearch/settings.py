"""The one settings object. Every value can be set by an environment variable prefixed TICKETSEARCH_."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TICKETSEARCH_", extra="ignore")

    # Encoder
    model: str = Field(
        default="minilm",
        description="'minilm' (packaged all-MiniLM-L6-v2) or a path to a local sentence-transformers model directory.",
    )
    max_seq_length: int = Field(default=256, ge=16, le=512)
    encode_batch_size: int = Field(default=64, ge=1, le=1024)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(default=0, ge=0, le=256, description="torch threads; 0 keeps the library default.")
    query_encoder: Literal["fp32", "onnx-int8"] = Field(
        default="onnx-int8",
        description="How queries are encoded (indexed tickets always use the fp32 model). 'onnx-int8': the same "
        "model exported to ONNX with int8 weights, run by ONNX Runtime: 2.8x faster per pasted ticket on 2 cores "
        "at a cost of 0.4 RR@10 points dense and none hybrid on hadoop (docs/RESULTS.md). Falls back to fp32, "
        "with a warning, where ONNX Runtime is missing or the device is a GPU.",
    )
    query_threads: int = Field(
        default=0, ge=0, le=256,
        description="ONNX Runtime threads for a query pass; 0 = torch's count. On 2 quiet cores 2 threads encode "
        "a ticket in 12 ms against 20 ms with 1; under heavy load 1 thread holds up better (docs/encode_results.md).",
    )
    cache_dir: Path = Field(
        default=Path("~/.cache/ticketsearch"),
        description="Per-machine cache (the exported ONNX query encoder, keyed by the model's identity).",
    )
    search_threads: int = Field(
        default=1, ge=0, le=256,
        description="FAISS (OpenMP) threads for searching; 0 keeps the library default. One query at a time is "
        "fastest on one thread: on 2 cores, 2 threads made single-query flat search slower (docs/RESULTS.md).",
    )

    # Vector index
    index_type: Literal["auto", "flat", "hnsw", "ivf"] = "auto"
    flat_max_rows: int = Field(
        default=50_000, ge=1,
        description="'auto' uses exact flat search up to this size and HNSW above it. Measured (docs/RESULTS.md): "
        "one flat search costs ~8 ms at 100k and ~60 ms at 1M on one core; HNSW (M 32, efSearch 128) costs "
        "0.4-0.6 ms there at recall@100 .99 on clustered vectors and .98 on real hadoop embeddings.",
    )
    hnsw_m: int = Field(default=32, ge=4, le=128)
    hnsw_ef_construction: int = Field(default=80, ge=8)
    hnsw_ef_search: int = Field(default=128, ge=8)
    ivf_nprobe: int = Field(default=32, ge=1)
    exact_filter_max: int = Field(
        default=50_000, ge=0, description="A filtered search over at most this many candidates is exact (brute force)."
    )

    # Reranker
    rerank_runtime: Literal["onnx", "torch"] = Field(
        default="onnx",
        description="How a search runs the reranker's per-query parts on the CPU: 'onnx' (ONNX Runtime, "
        "exported once per model into cache_dir; same scores within 1e-5) or 'torch'.",
    )
    rerank_vector_dtype: Literal["float32", "float16"] = Field(
        default="float32", description="Storage of the cached candidate vectors; float16 halves their memory."
    )

    # Hybrid retrieval
    search_method: Literal["dense", "bm25", "hybrid"] = "hybrid"
    fusion_depth: int = Field(
        default=200, ge=10, le=10_000, description="Candidates taken from each method before fusing."
    )

    # Query service (`ticketsearch serve`)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys: str = Field(
        default="", repr=False,
        description="Comma-separated KEY:SCOPE[@COLLECTION] entries, SCOPE read, write (implies read) or admin "
        "(create, delete and train collections, and everything else); without @COLLECTION a key applies to every "
        "collection. Empty = open, local only.",
    )
    webhook_secrets: str = Field(
        default="", repr=False,
        description="Comma-separated COLLECTION=SECRET pairs: the secret each collection's tracker webhooks are "
        "signed with (GitHub, Jira) or send as their token. A collection without one refuses its hooks.",
    )
    max_open_collections: int = Field(
        default=20, ge=1, le=10_000,
        description="Collections held open at once (`serve --root`); opening one more first closes the least "
        "recently used idle one, after its checkpoint.",
    )
    collection_idle_s: float = Field(
        default=300.0, gt=0, description="A collection unused this long is closed (it reopens on its next request)."
    )
    training_jobs: int = Field(
        default=1, ge=1, le=16, description="Training jobs run at once (others wait, queued); one per collection."
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Larger request bodies get 413.")
    workers: int = Field(default=4, ge=1, le=64, description="Requests doing model or index work at once.")
    max_pending: int = Field(
        default=64, ge=1, description="Admitted requests (running or waiting); beyond it the service answers 503."
    )
    retry_after_s: int = Field(default=1, ge=1, le=3600)
    encode_max_batch: int = Field(default=32, ge=1, le=1024, description="Most texts micro-batched per encoder pass.")
    checkpoint_interval_s: float = Field(
        default=5.0, gt=0, description="How often written tickets' derived indexes are persisted."
    )
    general_reranker: bool = Field(
        default=True,
        description="Rerank an index that has no model of its own (never trained, or too few links for one to beat "
        "the first stage on validation) with the shipped general model: a logistic regression on the pair inputs "
        "every schema has, trained on hadoop and hive (docs/RESULTS.md). False keeps first-stage order there.",
    )
    duplicate_precision: float = Field(
        default=0.9, gt=0, lt=1, description="Target precision of the stored duplicate threshold to use."
    )
    compact_changes: int = Field(
        default=500, ge=1,
        description="A live index whose overlay of changes since its base was built holds this many rows is "
        "compacted: a new base is built from a snapshot in the checkpoint thread, outside the lock, and swapped "
        "in. Below it a checkpoint writes only the overlay. The overlay's cost is paid by every search: BM25 "
        "scores changed rows in Python, measured on 20k demo tickets (2 busy cores) at +12 ms per query with 500 "
        "changed rows, +35 ms with 1,000, +55 ms with 2,000 (HNSW's masked search: +2-5 ms at 2,000). A "
        "compaction costs one build (20k: BM25 9-20 s, HNSW 20-70 s of CPU; HNSW ~30 s at 100k, ~8 min at 1M), "
        "once per this many writes.",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
