"""The index's and models' settings: how tickets are encoded, indexed, searched and reranked, and how a live
index keeps itself. Every value can be set by an environment variable prefixed TICKETSEARCH_. The HTTP
service's own settings (keys, port, admission, collections) are `ticketsearch.service.settings`.

Lower layers take a `Settings` as an argument; only the doors (the CLI, the service, `TicketIndex.open`,
scripts) read the environment, through `get_settings()`. Measured figures behind the defaults are in
docs/SETTINGS.md, not here."""

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
        "model exported to ONNX with int8 weights, run by ONNX Runtime. Falls back to fp32, with a warning, where "
        "ONNX Runtime is missing or the device is a GPU.",
    )
    query_threads: int = Field(default=0, ge=0, le=256,
                               description="ONNX Runtime threads for a query pass; 0 = `threads`, else the cores.")
    cache_dir: Path = Field(
        default=Path("~/.cache/ticketsearch"),
        description="Per-machine cache (the exported ONNX query encoder, keyed by the model's identity; the "
                    "weights' content hashes).",
    )
    search_threads: int = Field(default=1, ge=0, le=256,
                                description="FAISS (OpenMP) threads for searching; 0 keeps the library default.")

    # Vector index
    index_type: Literal["auto", "flat", "hnsw", "ivf"] = "auto"
    flat_max_rows: int = Field(default=50_000, ge=1,
                               description="'auto' uses exact flat search up to this size and HNSW above it.")
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
    general_reranker: bool = Field(
        default=True,
        description="Rerank an index that has no model of its own (never trained, or too few links for one to beat "
        "the first stage on validation) with the shipped general model. False keeps first-stage order there.",
    )
    duplicate_precision: float = Field(
        default=0.9, gt=0, lt=1, description="Target precision of the stored duplicate threshold to use."
    )

    # Hybrid retrieval
    search_method: Literal["dense", "bm25", "hybrid"] = "hybrid"
    fusion_depth: int = Field(
        default=200, ge=10, le=10_000, description="Candidates taken from each method before fusing."
    )

    # A live index (the engine behind the service and `TicketIndex.open(writable=True)`)
    encode_max_batch: int = Field(default=32, ge=1, le=1024, description="Most texts micro-batched per encoder pass.")
    checkpoint_interval_s: float = Field(
        default=5.0, gt=0, description="How often written tickets' derived indexes are persisted."
    )
    compact_changes: int = Field(
        default=500, ge=1,
        description="A live index whose overlay of changes since its base was built holds this many rows is "
        "compacted (a new base built from a snapshot, outside the lock, and swapped in); below it a checkpoint "
        "writes only the overlay. Every search pays for the overlay; a compaction costs one build.",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
