"""The service on Ray Serve: the FastAPI app as a replicated front deployment, each shard of a sharded
collection a deployment of its own.

```
ticketsearch serve --ray --root DIR --shards 2 --replicas 2        # a local Ray instance
ticketsearch serve --ray --ray-address auto --root /shared/ts       # a running cluster (DIR on shared storage)
```

- The front (`--replicas M`, or Serve's autoscaling: `--autoscale MIN:MAX`) runs the same app as
  `ticketsearch serve --root`: it encodes each query once, asks each of the collection's shards once and fuses
  and reranks their answers (`pipeline.sharded`). It is stateless, so it scales with the query rate. Its
  encoder passes are batched by its own encoder thread, as `serve --root` batches them (Serve's request
  batching measured the same, and was removed: RESULTS).
- Each shard (`ShardDeployment`) is one `Engine` over the shard's index directory, deployed as the Serve
  application `ts-COLLECTION-sNNN` when its collection is first opened: the shard's primary, which takes its
  writes (DuckDB has one writer per file). A killed replica is replaced by Serve and reopens its directory;
  every acknowledged write is in DuckDB (committed before the answer), and start-up replays what the index
  files missed.
- `--replicas M` gives each shard M - 1 read replicas besides (`FollowerDeployment`, applications
  `ts-COLLECTION-sNNN-rK`): each an engine over its own copy of the shard (made by the primary), pulling the
  primary's changes (`pipeline.replica`). The front sends reads to the primary and the read replicas in turn,
  each read answered at the primary's position as of when it was asked, so a read after a write sees it. One
  Serve application per copy, not one deployment of M replicas: Serve routes a call to any replica of a
  deployment, and a write must reach the one writer.
- New collections get `--shards` shards unless `PUT /v1/collections/{name}` says `"shards": N`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import Any

from ticketsearch.errors import UnavailableError
from ticketsearch.logs import configure_logging
from ticketsearch.pipeline.sharding import ShardLayout
from ticketsearch.pipeline.shared_models import SharedModels
from ticketsearch.retrieval.threads import apply_threads
from ticketsearch.settings import Settings

log = logging.getLogger("ticketsearch.ray_app")

FRONT_APP = "ticketsearch"
SHARD_CPUS = 0.25  # a shard waits on DuckDB and FAISS mostly; the encoder runs in the front
DEPLOY_TIMEOUT_S = 300.0
TARGET_ONGOING = 4  # requests per front replica that Serve's autoscaler aims at
FRONT_ONGOING = 32  # requests a front replica takes at once (Serve's default, 5, would cap its batches at 5)


def shard_app_name(layout: ShardLayout, i: int) -> str:
    """The Serve application of one shard: the collection's folder name and the shard number."""
    name = re.sub(r"[^a-zA-Z0-9_-]", "-", layout.root.name)
    return f"ts-{name}-s{i:03d}"


class ShardDeployment:
    """One shard: `ShardServer.call`s by name (the front's `ShardClient` protocol), on its own replica."""

    def __init__(self, path: str, settings: dict[str, Any]) -> None:
        from ticketsearch.pipeline.shard import ShardServer  # deferred: bm25s, SciPy

        configure_logging("INFO")
        conf = Settings(**settings)
        apply_threads(conf)  # this replica's process
        self.server: ShardServer | None = ShardServer.open(Path(path), conf)

    def call(self, method: str, *args: Any) -> Any:
        assert self.server is not None
        return self.server.dispatch(method, *args)  # the front's calls only (`pipeline.shard.CALLS`)

    def __del__(self) -> None:  # Serve's graceful shutdown: checkpoint and close the shard's files
        server = getattr(self, "server", None)
        if server is not None:
            server.close()
            self.server = None


class FollowerDeployment:
    """A shard's read replica (`pipeline.replica.FollowerServer`) over its own copy, pulling from the primary's
    application. Its reads run in a thread (a pull waits on the primary)."""

    def __init__(self, path: str, settings: dict[str, Any], primary_app: str, name: str) -> None:
        from ray import serve  # deferred: Ray

        from ticketsearch.pipeline.replica import FollowerServer  # deferred: bm25s, SciPy

        configure_logging("INFO")
        self.name = name
        self.primary = serve.get_app_handle(primary_app)
        conf = Settings(**settings)
        apply_threads(conf)  # this replica's process
        self.server: FollowerServer | None = FollowerServer.open_follower(Path(path), conf, self._pull)

    def _pull(self, since: int) -> Any:
        return _Response(self.primary.call.remote("changes", since, self.name)).result()

    async def call(self, method: str, *args: Any) -> Any:
        if method != "at":
            raise ValueError(f"a read replica answers reads through 'at', not {method!r}")
        assert self.server is not None
        return await asyncio.to_thread(self.server.at, *args)

    def __del__(self) -> None:
        server = getattr(self, "server", None)
        if server is not None:
            server.close()
            self.server = None


class _Response:
    def __init__(self, response: Any) -> None:
        self.response = response

    def result(self) -> Any:
        from ray.exceptions import RayTaskError  # deferred: Ray

        try:
            return self.response.result()
        except RayTaskError as exc:  # the shard's own exception (NotFoundError, QueryError, ...) as raised there
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise


class _ShardHandle:
    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def call(self, method: str, *args: Any) -> _Response:
        return _Response(self.handle.call.remote(method, *args))


class RayShards:
    """`ShardedEngine`'s connector on Ray Serve: each shard's application (and its read replicas' with
    `replicas` > 1), deployed if it is not running."""

    def __init__(self, layout: ShardLayout, settings: Settings, models: SharedModels | None = None,
                 replicas: int = 1) -> None:
        from ray import serve  # deferred: Ray

        from ticketsearch.pipeline.replica import ReplicatedShard  # deferred: bm25s, SciPy

        running = set(serve.status().applications)
        options: dict[str, Any] = {"num_replicas": 1, "ray_actor_options": {"num_cpus": SHARD_CPUS},
                                   "health_check_period_s": 2, "graceful_shutdown_timeout_s": 60}
        conf = settings.model_dump(mode="json")
        for i, d in enumerate(layout.dirs()):
            name = shard_app_name(layout, i)
            if name not in running:
                bound = serve.deployment(ShardDeployment, name="shard", **options).bind(  # type: ignore[attr-defined]  # serve.deployment(cls) is a Deployment
                    str(d.root), conf)
                serve.run(bound, name=name, route_prefix=None)
        primaries = [_ShardHandle(wait_for_app(shard_app_name(layout, i))) for i in range(layout.shards)]
        self.clients: list[Any] = []
        for i, primary in enumerate(primaries):
            followers = []
            for r in range(1, replicas):
                where, app = layout.replica_dir(i, r), f"{shard_app_name(layout, i)}-r{r}"
                if app not in running:
                    primary.call("copy_to", str(where), where.name).result()  # made once, by the primary
                    bound = serve.deployment(FollowerDeployment, name="replica", **options).bind(  # type: ignore[attr-defined]  # serve.deployment(cls) is a Deployment
                        str(where), conf, shard_app_name(layout, i), where.name)
                    serve.run(bound, name=app, route_prefix=None)
                followers.append(_ShardHandle(wait_for_app(app)))
            self.clients.append(ReplicatedShard(primary, followers) if followers else primary)

    def close(self) -> None:
        """The shard applications stay up (every front replica shares them); only the handles are dropped."""
        self.clients = []

    @staticmethod
    def remove(layout: ShardLayout) -> None:
        """Stop a deleted collection's shard applications, read replicas included (each checkpoints and closes
        its directory)."""
        from ray import serve  # deferred: Ray

        mine = re.compile(re.escape(shard_app_name(layout, 0)[: -len("000")]) + r"\d{3}(-r\d+)?")
        for name in list(serve.status().applications):
            if mine.fullmatch(name):
                serve.delete(name)


class RayConnector:
    """How the front's collections reach their shards on Ray: `RayShards` with `replicas` copies of each."""

    def __init__(self, replicas: int = 1) -> None:
        self.replicas = replicas

    def __call__(self, layout: ShardLayout, settings: Settings, models: SharedModels | None = None) -> RayShards:
        return RayShards(layout, settings, models, self.replicas)

    remove = staticmethod(RayShards.remove)


def wait_for_app(name: str, timeout_s: float = DEPLOY_TIMEOUT_S) -> Any:
    """A handle to a Serve application once it is running (UnavailableError if it fails or times out)."""
    from ray import serve  # deferred: Ray
    from ray.serve.schema import ApplicationStatus  # deferred: Ray, FastAPI

    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get(name)
        if status is not None and status.status == ApplicationStatus.RUNNING:
            return serve.get_app_handle(name)
        if status is not None and status.status == ApplicationStatus.DEPLOY_FAILED:
            raise UnavailableError(f"shard application {name} failed to deploy: {status.message}")
        if time.monotonic() > deadline:
            raise UnavailableError(f"shard application {name} is not running after {timeout_s:.0f} s")
        time.sleep(0.5)


def front_app(root: Path, settings: Settings, shards: int, replicas: int,
              autoscale: tuple[int, int] | None = None, shard_replicas: int = 1) -> Any:
    """The front deployment bound to its arguments (what `serve.run` deploys; a cluster's config can name
    `ticketsearch.service.ray_app:front_app` with the same arguments). `replicas`: the front's; `autoscale`
    (MIN, MAX): Serve's replica autoscaling in its place, aiming at TARGET_ONGOING requests per replica;
    `shard_replicas`: copies of each shard (the primary and read replicas). `settings` (the index's and models')
    travel as the deployment's arguments; the service's own (API keys, webhook secrets, admission) do not: each
    front replica reads them from its environment (a local Ray's workers inherit the driver's)."""
    from ray import serve  # deferred: Ray

    settings_dict = settings.model_dump(mode="json")

    def build() -> Any:
        from .app import create_app  # deferred: FastAPI, bm25s

        configure_logging("INFO")
        return create_app(None, Settings(**settings_dict), root=Path(root), connect_shards=RayConnector(shard_replicas),
                          default_shards=shards)

    scale: dict[str, Any] = {"num_replicas": replicas} if autoscale is None else {"autoscaling_config": {
        "min_replicas": autoscale[0], "max_replicas": autoscale[1], "target_ongoing_requests": TARGET_ONGOING}}

    @serve.deployment(name="front", ray_actor_options={"num_cpus": 0.5}, health_check_period_s=5,
                      max_ongoing_requests=FRONT_ONGOING, **scale)
    @serve.ingress(build)
    class Front:
        pass

    return Front.bind()  # type: ignore[attr-defined]  # the decorators make Front a Deployment


def run(root: Path, settings: Settings, shards: int, replicas: int, host: str, port: int,
        address: str | None = None, num_cpus: int | None = None, autoscale: tuple[int, int] | None = None) -> None:
    """Start (or join) Ray, deploy the front on HOST:PORT and block until interrupted."""
    import ray  # deferred: Ray
    from ray import serve  # deferred: Ray

    if address in (None, "local"):
        ray.init(num_cpus=num_cpus, include_dashboard=False)
    else:
        ray.init(address=address)
    serve.start(http_options={"host": host, "port": port})
    serve.run(front_app(root, settings, shards, replicas, autoscale, shard_replicas=replicas), name=FRONT_APP,
              route_prefix="/")
    fronts = f"{autoscale[0]}-{autoscale[1]} (autoscaled)" if autoscale else str(replicas)
    log.info("serving %s on http://%s:%d (Ray Serve: %s front replica(s), %d shard(s) per new collection, %d "
             "cop(ies) of each)", root, host, port, fronts, shards, replicas)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
