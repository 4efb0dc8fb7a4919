"""Read replicas of a shard: one primary takes the writes, followers answer reads as well.

DuckDB has one writer per file, so a shard's replicas are not copies of one process: the primary
(`ShardServer` over the shard's directory) takes every write; each follower (`FollowerServer`) is an engine
over its own copy of the directory (`NAME/replicas/shard-NNN-rK/`, made by the primary:
`Engine.copy_for_replica`) that pulls the primary's changes (`Engine.changes_for_replica`: rows with their row
ids and vectors, so a follower encodes nothing; deleted row ids) and applies them (`Engine.apply_replicated`).
The primary's change log keeps what a follower has not pulled yet.

The front reaches a replicated shard through `ReplicatedShard`: writes (and anything not a plain read) go to
the primary; reads go to the primary and the followers in turn, and a follower answers a read only once it
holds the primary's change as of when the read was asked (`at`), so a read after a write sees it. A follower
also pulls on its own every `poll_s`, so that it is seldom behind when a read comes.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ticketsearch.settings import Settings

from .engine import ReplicaChanges  # made and applied by the engine
from .shard import ShardServer
from .shared_models import SharedModels

log = logging.getLogger("ticketsearch.replica")

# The calls a follower answers: reads of the shard's tickets and indexes (writes, feedback and webhook
# deliveries are the primary's).
READS = frozenset({"schema", "search", "rows", "ticket", "bodies", "schema_fields", "get",
                   "count"})


def replica_name(shard: int, replica: int) -> str:
    return f"shard-{shard:03d}-r{replica}"


class FollowerServer(ShardServer):
    """A follower: `ShardServer`'s reads over its own copy, kept up with the primary through `pull(since)`."""

    def __init__(self, engine: Any, pull: Callable[[int], ReplicaChanges], poll_s: float = 1.0) -> None:
        super().__init__(engine)
        self.pull = pull
        assert engine.store is not None
        self._position = int(engine.store.primary_seq())
        self.reads = 0  # reads answered (`at`)
        self._sync = threading.Lock()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, args=(poll_s,), name="replica-poll", daemon=True)
        self._poller.start()

    @classmethod
    def open_follower(cls, path: Path, settings: Settings, pull: Callable[[int], ReplicaChanges],
                      models: SharedModels | None = None, poll_s: float = 1.0) -> FollowerServer:
        return cls(ShardServer.open(path, settings, models).engine, pull, poll_s)

    @property
    def position(self) -> int:
        """The primary's change this follower holds."""
        return self._position

    def sync(self, min_seq: int | None = None) -> int:
        """Pull and apply the primary's changes unless this follower holds `min_seq` already (None: pull)."""
        if min_seq is not None and self._position >= min_seq:
            return self._position
        with self._sync:
            if min_seq is None or self._position < min_seq:
                self._position = self.engine.apply_replicated(self.pull(self._position))
            return self._position

    def at(self, min_seq: int, method: str, *args: Any) -> Any:
        """Answer the read `method` once this follower holds the primary's change `min_seq`."""
        if method not in READS:
            raise ValueError(f"a read replica does not answer {method!r}")
        self.sync(min_seq)
        self.reads += 1
        return getattr(self, method)(*args)

    def _poll(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - the next poll, or the next read, tries again
                log.warning("replica %s could not pull from its primary", self.engine.index_dir, exc_info=True)

    def close(self) -> None:
        self._stop.set()
        self._poller.join(timeout=10)
        super().close()


class ReplicatedShard:
    """A shard with followers as the front reaches it (`pipeline.sharded.ShardClient`): writes to the primary,
    reads to the primary and the followers in turn, each follower at least at the primary's position when the
    read was asked."""

    def __init__(self, primary: Any, followers: Sequence[Any]) -> None:
        self.primary = primary
        self.followers = list(followers)
        self._turn = itertools.count()

    def call(self, method: str, *args: Any) -> Any:
        if method not in READS or not self.followers:
            return self.primary.call(method, *args)
        i = next(self._turn) % (len(self.followers) + 1)
        if i == 0:
            return self.primary.call(method, *args)
        seq = self.primary.call("seq").result()
        return self.followers[i - 1].call("at", seq, method, *args)
