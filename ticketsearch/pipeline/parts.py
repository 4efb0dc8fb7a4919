"""Opening an index directory's parts: its store, manifest, encoder and reranker. `IndexDir` only says where
they are; opening them (and checking the encoder against the manifest) is the application's job."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ticketsearch.errors import TicketsearchError
from ticketsearch.index_data.schema import Schema
from ticketsearch.index_data.store import TicketStore
from ticketsearch.index_dir import IndexDir
from ticketsearch.rerank.general import LinearReranker, is_linear
from ticketsearch.retrieval.manifest import Manifest
from ticketsearch.settings import Settings

if TYPE_CHECKING:
    from ticketsearch.rerank.runtime import Reranker
    from ticketsearch.retrieval.encoder import Encoder


def open_store(d: IndexDir, read_only: bool = True, schema: Schema | None = None) -> TicketStore:
    if read_only:
        d.require_store()
    return TicketStore(d.store_path, schema=schema, read_only=read_only)


def load_manifest(d: IndexDir) -> Manifest:
    return Manifest.load(d.root)


def index_settings(manifest: Manifest, settings: Settings) -> Settings:
    """The settings an index's models run with: its manifest's max_seq_length over `settings` (the one place
    that resolves model settings from the manifest)."""
    return settings.model_copy(update={"max_seq_length": manifest.max_seq_length})


def open_encoder(d: IndexDir, settings: Settings, manifest: Manifest | None = None) -> Encoder:
    """The encoder the index was built with, at the manifest's max_seq_length, checked against its identity."""
    from ticketsearch.retrieval.encoder import Encoder  # deferred: torch (opening a store needs none)

    manifest = manifest or load_manifest(d)
    settings = index_settings(manifest, settings)
    encoder = Encoder(manifest.model, settings=settings)
    if encoder.key != manifest.model_key:
        raise TicketsearchError(f"{d.root} was built with model {manifest.model_key}; the loaded model is "
                                f"{encoder.key}")
    return encoder


def open_reranker(d: IndexDir, settings: Settings) -> Reranker | LinearReranker:
    """The index's installed reranker: a linear one (`rerank-linear`: pair inputs alone) or a fusion model."""
    if is_linear(d.reranker_path):
        return LinearReranker(d.reranker_path)
    from ticketsearch.rerank.runtime import Reranker  # deferred: torch

    return Reranker(d.reranker_path, device=settings.device, runtime=settings.rerank_runtime,
                    cache_dir=settings.cache_dir)
