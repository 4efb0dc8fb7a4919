"""The service on Ray Serve: the FastAPI app as a replicated front deployment, each shard of a sharded
collection a deployment of its own.

```
ticketsearch serve --ray --root DIR --shards 2 --replicas 2        # a local Ray instance
ticketsearch serve --ray --ray-address auto --root /shared/ts       # a running cluster (DIR on shared storage)
```

- The front (`--replicas M`, or Serve's autoscaling) runs the same app as `ticketsearch serve --root`: it
  encodes each query once, scatters it to the collection's shards and fuses and reranks their answers
  (`pipeline.sharded`). It is stateless, so it scales with the query rate.
- Each shard (`ShardDeployment`) is one `Engine` over the shard's index directory, deployed as the Serve
  application `ts-COLLECTION-sNNN` when its collection is first opened. One replica per shard: DuckDB has one
  writer per file. A killed replica is replaced by Serve and reopens its directory; every acknowledged write is
  in DuckDB (committed before the answer), and start-up replays what the index files missed.
- New collections get `--shards` shards unless `PUT /v1/collections/{name}` says `"shards": N`.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

from ticketsearch.errors import UnavailableError
from ticketsearch.pipeline.shared_models import SharedModels
from ticketsearch.settings import Settings
from ticketsearch.sharding import ShardLayout

log = logging.getLogger("ticketsearch.ray_app")

FRONT_APP = "ticketsearch"
SHARD_CPUS = 0.25  # a shard waits on DuckDB and FAISS mostly; the encoder runs in the front
DEPLOY_TIMEOUT_S = 300.0


def shard_app_name(layout: ShardLayout, i: int) -> str:
    """The Serve application of one shard: the collection's folder name and the shard number."""
    name = re.sub(r"[^a-zA-Z0-9_-]", "-", layout.root.name)
    return f"ts-{name}-s{i:03d}"


class ShardDeployment:
    """One shard: `ShardServer.call`s by name (the front's `ShardClient` protocol), on its own replica."""

    def __init__(self, path: str, settings: dict[str, Any]) -> None:
        from ticketsearch.pipeline.shard import ShardServer

        logging.basicConfig(level=logging.INFO)
        self.server: ShardServer | None = ShardServer.open(Path(path), Settings(**settings))

    def call(self, method: str, *args: Any) -> Any:
        if method.startswith("_") or method in ("open", "close"):
            raise ValueError(f"no shard call {method!r}")
        assert self.server is not None
        return getattr(self.server, method)(*args)

    def __del__(self) -> None:  # Serve's graceful shutdown: checkpoint and close the shard's files
        server = getattr(self, "server", None)
        if server is not None:
            server.close()
            self.server = None


class _Response:
    def __init__(self, response: Any) -> None:
        self.response = response

    def result(self) -> Any:
        from ray.exceptions import RayTaskError

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
    """`ShardedEngine`'s connector on Ray Serve: each shard's application, deployed if it is not running."""

    def __init__(self, layout: ShardLayout, settings: Settings, models: SharedModels | None = None) -> None:
        from ray import serve

        running = set(serve.status().applications)
        for i, d in enumerate(layout.dirs()):
            name = shard_app_name(layout, i)
            if name not in running:
                deployment = serve.deployment(ShardDeployment, name="shard", num_replicas=1,
                                              ray_actor_options={"num_cpus": SHARD_CPUS},
                                              health_check_period_s=2, graceful_shutdown_timeout_s=60)
                bound = deployment.bind(str(d.root), settings.model_dump(mode="json"))  # type: ignore[attr-defined]  # serve.deployment(cls) is a Deployment
                serve.run(bound, name=name, route_prefix=None)
        self.clients = [_ShardHandle(wait_for_app(shard_app_name(layout, i))) for i in range(layout.shards)]

    def close(self) -> None:
        """The shard applications stay up (every front replica shares them); only the handles are dropped."""
        self.clients = []

    @staticmethod
    def remove(layout: ShardLayout) -> None:
        """Stop a deleted collection's shard applications (each checkpoints and closes its directory)."""
        from ray import serve

        running = set(serve.status().applications)
        for i in range(layout.shards):
            if shard_app_name(layout, i) in running:
                serve.delete(shard_app_name(layout, i))


def wait_for_app(name: str, timeout_s: float = DEPLOY_TIMEOUT_S) -> Any:
    """A handle to a Serve application once it is running (UnavailableError if it fails or times out)."""
    from ray import serve
    from ray.serve.schema import ApplicationStatus

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


def front_app(root: Path, settings: Settings, shards: int, replicas: int) -> Any:
    """The front deployment bound to its arguments (what `serve.run` deploys; a cluster's config can name
    `ticketsearch.service.ray_app:front_app` with the same arguments)."""
    from ray import serve

    settings_dict = settings.model_dump(mode="json")

    def build() -> Any:
        from .app import create_app

        logging.basicConfig(level=logging.INFO)
        return create_app(None, Settings(**settings_dict), root=Path(root), connect_shards=RayShards,
                          default_shards=shards)

    @serve.deployment(name="front", num_replicas=replicas, ray_actor_options={"num_cpus": 0.5},
                      health_check_period_s=5)
    @serve.ingress(build)
    class Front:
        pass

    return Front.bind()  # type: ignore[attr-defined]  # the decorators make Front a Deployment


def run(root: Path, settings: Settings, shards: int, replicas: int, host: str, port: int,
        address: str | None = None, num_cpus: int | None = None) -> None:
    """Start (or join) Ray, deploy the front on HOST:PORT and block until interrupted."""
    import ray
    from ray import serve

    if address in (None, "local"):
        ray.init(num_cpus=num_cpus, include_dashboard=False)
    else:
        ray.init(address=address)
    serve.start(http_options={"host": host, "port": port})
    serve.run(front_app(root, settings, shards, replicas), name=FRONT_APP, route_prefix="/")
    log.info("serving %s on http://%s:%d (Ray Serve: %d front replica(s), %d shard(s) per new collection)",
             root, host, port, replicas, shards)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
