"""An index directory: every path of its layout (paths only: `pipeline.parts` opens the parts).

```
DIR/tickets.duckdb          tickets, typed field columns, stable row ids, embedding cache (source of truth)
DIR/index/manifest.json     how the directory was built, and the last change every derived file reflects
DIR/index/features.json     learned vocabularies and numeric statistics
DIR/index/vectors.faiss     FAISS over full-text embeddings, keyed by row id (+ vectors.overlay: live changes)
DIR/index/titles.faiss      the same over title embeddings
DIR/index/bm25/             BM25 (bm25s parts + statistics)
DIR/index/rerank_*          the installed reranker's cached candidate vectors, tagged with its checksum
DIR/rerank_tokens/KEY/      the frozen encoder's token states (fp16 shards), per encoder identity
DIR/encoder/                the encoder tuned on the index's links, when installed (sentence-transformers dir)
DIR/tune_decision.json      why the last `tune-encoder` installed the tuned encoder, or not (validation figures)
DIR/reranker/               the installed reranker: config.json + model.safetensors
DIR/rerankers/NAME/         every trained variant (experiments and `ticketsearch train`)
DIR/rerank_decision.json    why the last training installed its best variant, or none (validation figures)
DIR/jobs/ID.json            a service's jobs on this index (state, progress, validation, result)
DIR/dedupe/ID.jsonl         a dedupe job's clusters
DIR/shard.json              present in one shard of a sharded collection: which shard of how many
```

No other module names a file of this layout: they ask an `IndexDir`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ticketsearch.atomic import atomic_write_json, fsync_dir, recover_dir
from ticketsearch.errors import NotFoundError


@dataclass(frozen=True)
class IndexDir:
    root: Path

    def __init__(self, root: Path | str) -> None:
        object.__setattr__(self, "root", Path(root))

    # ---- the layout ---------------------------------------------------------------------------------
    @property
    def store_path(self) -> Path:
        return self.root / "tickets.duckdb"

    @property
    def derived(self) -> Path:
        """The folder of files derived from the store (rebuildable from it)."""
        return self.root / "index"

    @property
    def manifest_path(self) -> Path:
        return self.derived / "manifest.json"

    @property
    def features_path(self) -> Path:
        return self.derived / "features.json"

    def vectors_path(self, which: str = "text") -> Path:
        """The FAISS file of full-text (`text`) or title (`title`) embeddings."""
        if which not in ("text", "title"):
            raise ValueError(f"which must be 'text' or 'title', not {which!r}")
        return self.derived / ("vectors.faiss" if which == "text" else "titles.faiss")

    def overlay_path(self, which: str = "text") -> Path:
        """The live changes on top of a FAISS file, saved at checkpoints (one .npz file; `retrieval.live`)."""
        return self.vectors_path(which).with_suffix(".overlay")

    @property
    def shard_path(self) -> Path:
        """Present in one shard of a sharded collection (`ticketsearch.pipeline.sharding`): which shard, of how many."""
        return self.root / "shard.json"

    @property
    def is_shard(self) -> bool:
        """A shard's BM25 keeps its term frequencies: it scores with the whole collection's statistics."""
        return self.shard_path.is_file()

    @property
    def bm25_overlay_path(self) -> Path:
        """The live changes on top of the BM25 folder (beside it: the folder is swapped whole when rebuilt)."""
        return self.derived / "bm25.overlay"

    @property
    def rerank_overlay_path(self) -> Path:
        """The live changes on top of the reranker's cached candidate vectors."""
        return self.derived / "rerank_vectors.overlay"

    @property
    def bm25_path(self) -> Path:
        return self.derived / "bm25"

    @property
    def rerank_vectors_path(self) -> Path:
        return self.derived / "rerank_vectors.npy"

    @property
    def rerank_rows_path(self) -> Path:
        return self.derived / "rerank_rows.npy"

    @property
    def rerank_tag_path(self) -> Path:
        return self.derived / "rerank_vectors.json"

    @property
    def encoder_path(self) -> Path:
        """The tuned encoder (`ticketsearch tune-encoder`), when one is installed: the manifest's model then."""
        return self.root / "encoder"

    @property
    def staged_encoder_path(self) -> Path:
        """A tuned encoder being checked before it is installed (removed either way)."""
        return self.root / "encoder.staged"

    @property
    def tune_decision_path(self) -> Path:
        return self.root / "tune_decision.json"

    @property
    def reranker_path(self) -> Path:
        return self.root / "reranker"

    @property
    def rerankers_path(self) -> Path:
        """Where trained reranker variants are kept before one is installed."""
        return self.root / "rerankers"

    @property
    def rerank_decision_path(self) -> Path:
        return self.root / "rerank_decision.json"

    def job_path(self, job_id: str) -> Path:
        """The record of a training job the service ran on this index."""
        return self.root / "jobs" / f"{job_id}.json"

    def dedupe_path(self, job_id: str) -> Path:
        """The clusters a dedupe job found (JSONL)."""
        return self.root / "dedupe" / f"{job_id}.jsonl"

    def token_cache_path(self, encoder_key: str) -> Path:
        key = hashlib.blake2b(encoder_key.encode(), digest_size=6).hexdigest()
        return self.root / "rerank_tokens" / key

    # ---- what is there ------------------------------------------------------------------------------
    def has_store(self) -> bool:
        return self.store_path.is_file()

    def has_reranker(self) -> bool:

        recover_dir(self.reranker_path)  # an install interrupted between its two renames
        return (self.reranker_path / "config.json").is_file()

    def load_rerank_decision(self) -> dict | None:
        """The last training's install decision (`pipeline.install.InstallDecision`), if any."""

        try:
            return dict(json.loads(self.rerank_decision_path.read_text()))
        except (OSError, ValueError):
            return None

    # ---- changing what is installed -----------------------------------------------------------------
    def save_rerank_decision(self, decision: dict) -> None:

        atomic_write_json(self.rerank_decision_path, decision)

    def uninstall_reranker(self) -> None:
        """Remove the installed reranker (the trained variants stay in `rerankers/`): one rename, so readers
        see it whole or not at all."""


        if not self.has_reranker():
            return
        gone = Path(tempfile.mkdtemp(prefix=".reranker.", suffix=".removed", dir=self.root))
        os.replace(self.reranker_path, gone / "reranker")
        fsync_dir(self.root)
        shutil.rmtree(gone, ignore_errors=True)

    def require_store(self) -> None:
        if not self.has_store():
            raise NotFoundError(f"{self.root}: no ticket store here (run 'ticketsearch ingest' first)")
