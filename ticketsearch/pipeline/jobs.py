"""Background training jobs of a running service: one per collection at a time.

A job trains the reranker on the collection's duplicate links (`pipeline.training.train_index`, on the store
the service holds open), and when the model validates (it beats first-stage order on the validation period)
the engine swaps it in without a restart (`Engine.reload_reranker`); searches are answered meanwhile by the
previous model. Each job's record is kept in `COLLECTION/jobs/ID.json` (written atomically at every change of
state), so `GET .../jobs/{id}` answers after the job, and after a restart (a job a restart interrupted reads as
failed).

The job trains with its own copy of the collection's encoder (the shared one belongs to the batcher thread that
serves searches: tokenizers must not be called from two threads at once), freed when it ends.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ticketsearch.api import TicketIndex
from ticketsearch.atomic import atomic_write_json
from ticketsearch.errors import ConflictError, JobNotFoundError
from ticketsearch.index_dir import IndexDir
from ticketsearch.names import is_job_id, new_job_id
from ticketsearch.pipeline.collections import Collections
from ticketsearch.pipeline.dedupe import check_ready, dedupe
from ticketsearch.pipeline.sharded import TRAINING_NOT_BUILT, ShardedEngine
from ticketsearch.pipeline.training import check_links, train_index, train_variants
from ticketsearch.rerank.train import TrainConfig
from ticketsearch.results import DedupeParams, JobInfo, TrainParams
from ticketsearch.settings import Settings

log = logging.getLogger("ticketsearch.pipeline.jobs")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class TrainingJobs:
    def __init__(self, collections: Collections, settings: Settings, concurrency: int = 1) -> None:
        """`concurrency`: jobs run at once (others wait, queued)."""
        self.collections = collections
        self.settings = settings
        self._lock = threading.Lock()
        self._running: dict[str, JobInfo] = {}  # collection -> its queued or running job
        self._slots = threading.Semaphore(concurrency)
        self._threads: list[threading.Thread] = []

    def _path(self, collection: str, job_id: str) -> Path:
        return IndexDir(self.collections.path(collection)).job_path(job_id)

    def _save(self, job: JobInfo) -> None:
        atomic_write_json(self._path(job.collection, job.id), job.model_dump(mode="json"))

    def start(self, collection: str, params: TrainParams | DedupeParams) -> JobInfo:
        """Queue a training job (TrainParams) or a dedupe job (DedupeParams), each checked before it is accepted:
        ConflictError while another job runs on the collection or (dedupe) without a trained reranker, QueryError
        when it has too few duplicate links to train on or (dedupe) no stored threshold for the precision."""

        kind: Literal["train", "dedupe"] = "dedupe" if isinstance(params, DedupeParams) else "train"
        job = JobInfo(id=new_job_id(), collection=collection, kind=kind, state="queued", created=now(),
                      params=params)
        with self._lock:
            if collection in self._running:
                running = self._running[collection]
                raise ConflictError(f"a {running.kind} job is already running on collection {collection!r} "
                                    f"(job {running.id})")
            self._running[collection] = job
        pinned = False
        try:
            engine = self.collections.pin(collection)  # held open (and undeletable) until the job ends
            pinned = True

            if isinstance(engine, ShardedEngine):
                raise ConflictError(TRAINING_NOT_BUILT)
            assert engine.store is not None
            if isinstance(params, TrainParams):
                train_variants(params.variant)  # LightGBM for rerank-lambdamart: refused now, not as a failed job
                check_links(engine.store, f"collection {collection!r}")
            else:
                check_ready(TicketIndex.of_engine(engine).pipeline.reranker, params.precision,
                            params.calibrate_since is not None)
            self._save(job)
        except BaseException:
            with self._lock:
                self._running.pop(collection, None)
            if pinned:
                self.collections.unpin(collection)
            raise
        thread = threading.Thread(target=self._run, args=(job,), name=f"{kind}-{collection}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return job.model_copy()

    def get(self, collection: str, job_id: str) -> JobInfo:
        self._checked(collection, job_id)
        with self._lock:
            job = self._running.get(collection)
            if job is not None and job.id == job_id:
                out = job.model_copy(deep=True)
                if out.state == "running" and out.started:
                    out.seconds = round(time.time() - datetime.fromisoformat(out.started).timestamp(), 1)
                return out
        try:
            data = json.loads(self._path(collection, job_id).read_text("utf-8"))
        except (OSError, ValueError):
            raise JobNotFoundError(f"job {job_id!r} not found in collection {collection!r}") from None
        job = JobInfo.model_validate(data)
        if job.state in ("queued", "running"):  # its process ended before it did
            job.state, job.error = "failed", "interrupted: the service stopped before the job finished"
        return job

    def running(self, collection: str) -> JobInfo | None:
        with self._lock:
            return self._running.get(collection)

    def _run(self, job: JobInfo) -> None:

        lines: deque[str] = deque(maxlen=50)

        def say(line: str) -> None:
            lines.append(line.strip())
            log.info("collection %s, job %s: %s", job.collection, job.id, line.strip())
            with self._lock:
                job.progress = list(lines)

        t0 = 0.0
        try:
            with self._slots:
                engine = self.collections.engine_if_open(job.collection)
                assert engine is not None and engine.store is not None  # pinned open
                with self._lock:
                    job.state, job.started = "running", now()
                self._save(job)
                t0 = time.perf_counter()
                p = job.params
                if isinstance(p, DedupeParams):
                    self._dedupe(job, engine, p, say)
                    return
                res = train_index(engine.index_dir, p.train_before, p.valid_before, p.variant, self.settings,
                                  TrainConfig(epochs=p.epochs, seed=p.seed), progress=False, log=say,
                                  store=engine.store, install_rule=p.install,
                                  validation_folds=p.validation_folds)
                say("swapping the model in")
                model = engine.reload_reranker()
                validation = {"first_stage": res["first_stage"]["valid"], **res["valid"]}
                result: dict[str, Any] = {
                    "installed": "installed" in res, "model": model, "decision": res["decision"],
                    "test": {"first_stage": res["first_stage"]["test"], **res["test"]},
                    "train_pairs": res.get("train_pairs"), "feedback": res.get("feedback"),
                    **{k: res[k] for k in ("folds", "folds_skipped", "decision_without_folds") if k in res}}
                with self._lock:
                    job.validation, job.result, job.state = validation, result, "done"
                say(f"done: search reranks with {model or 'nothing (first-stage order)'}")
        except Exception as exc:  # noqa: BLE001 - reported on the job, not a dead thread
            log.exception("collection %s, job %s failed", job.collection, job.id)
            with self._lock:
                job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                job.finished = now()
                job.seconds = round(time.perf_counter() - t0, 1) if t0 else 0.0
            try:  # the final record on disk before the job leaves `_running`: a poll in between read the stale
                self._save(job)  # "running" record and answered "interrupted"
            finally:
                with self._lock:
                    self._running.pop(job.collection, None)
                self.collections.unpin(job.collection)

    def clusters_path(self, collection: str, job_id: str) -> Path:
        """A dedupe job's clusters file (NotFoundError for what cannot be a job id)."""
        return IndexDir(self.collections.path(collection)).dedupe_path(self._checked(collection, job_id))

    @staticmethod
    def _checked(collection: str, job_id: str) -> str:
        if not is_job_id(job_id):
            raise JobNotFoundError(f"job {job_id[:40]!r} not found in collection {collection!r}")
        return job_id

    def _dedupe(self, job: JobInfo, engine: Any, p: DedupeParams, say: Callable[[str], None]) -> None:

        out = self.clusters_path(job.collection, job.id)
        out.parent.mkdir(parents=True, exist_ok=True)
        rep = dedupe(TicketIndex.of_engine(engine), out, precision=p.precision, since=p.since, progress=False,
                     log=say, calibrate_since=p.calibrate_since, calibrate_until=p.calibrate_until)
        result = {"tickets": rep.tickets, "pairs": rep.pairs, "new_pairs": rep.new_pairs, "clusters": rep.clusters,
                  "threshold": rep.threshold, "precision": rep.precision, "basis": rep.basis,
                  "precision_lower_bound": rep.precision_lower_bound}
        with self._lock:
            job.result, job.state = result, "done"
        say(f"done: {rep.pairs} pairs ({rep.new_pairs} not linked yet) in {rep.clusters} clusters")

    def close(self, timeout: float = 5.0) -> None:
        """Wait a little for running jobs (their threads are daemons: a stop interrupts them; their records
        then read as interrupted)."""
        for t in self._threads:
            t.join(timeout=timeout)
