"""Model replicas on a Ray cluster: the actor, the pool that owns them, and the dispatch.

`Replica` is a long-lived Ray actor: it builds the recipe's backend (vllm, llamacpp,
openai, scripted: any of them) and loads it ONCE in `__init__`, then runs the pure
chunk pipeline (`synth.pipeline.run_work`) or a plain batch (`generate`) as often as
it is asked, and returns plain rows stamped with its name and node (the requests
table's `worker` and `node`). Actors are created with `max_restarts=-1,
max_task_retries=0`: Ray restarts a dead replica (which reloads its model), and a
task in flight when it died fails instead of being replayed behind our back.

`ReplicaPool` is the driver's side (the Prefect flow's process). It connects to the
cluster (always with an explicit address, `include_dashboard=False`), starts the
replicas (one per GPU, a STRICT_PACK placement group for tensor parallel, or
`cpus_per_replica` cores each, a CPU backend's threads sized to them), and is itself a `Backend`: tree building,
classification and the rest call `pool.generate(batch)` and the batch is split over
the replicas. `dispatch(jobs)` is the one loop behind both:

- at most `chunks_per_replica` jobs in flight per replica (one running, one queued, so
  a replica never waits for the driver to commit), handed out with `ray.wait`;
- a replica that fails (`ActorDiedError`, `ActorUnavailableError`, its node lost)
  costs only its jobs in flight: they go back to the queue for any live replica, and
  the replica gets no work until it answers a ping again (Ray restarts it, possibly
  on another node);
- a job that failed `max_chunk_tries` times is given up: a chunk comes back as
  `ChunkFailed` (the ledger records it), a part of a batch as error values;
- no replica alive for `ready_timeout_s`: `ClusterError`.

Ids are deterministic, so a chunk that ran twice (a replica that died after finishing
it) is written once. Ray is imported only here and only when a pool starts.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

from synth.backends.base import BackendSettingsBase, GenerationRequest, GenerationResult
from synth.cluster import ClusterError, ClusterSettings
from synth.pipeline import ChunkContext, ChunkFailed, ChunkResult, run_work

log = logging.getLogger("synth.ray")
PING_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
# a replica reports nothing anywhere (vLLM's usage statistics, Hugging Face telemetry) unless told to
TELEMETRY_OFF = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def import_ray() -> Any:
    """Ray, with its usage statistics off; a clear error where it is not installed."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ClusterError("cluster.kind: ray needs Ray in this environment: pip install '.[ray]' (the same "
                           "Ray version on the driver and on every node; docs/scaling.md)") from None
    return ray


class _Stamped:
    """The replica's backend, with every result stamped with where it was made."""

    def __init__(self, backend: Any, worker: str, node: str) -> None:
        self.backend, self.worker, self.node = backend, worker, node
        self.name, self.model = backend.name, backend.model

    def load(self) -> None:
        self.backend.load()

    def close(self) -> None:
        self.backend.close()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [dataclasses.replace(r, worker=self.worker, node=self.node) for r in self.backend.generate(requests)]


class Replica:
    """The actor's body (wrapped by `ray.remote` in `ReplicaPool.start`): one backend, loaded once."""

    def __init__(self, settings: BackendSettingsBase, name: str) -> None:
        import ray

        for key, value in TELEMETRY_OFF.items():
            os.environ.setdefault(key, value)
        self.name = name
        self.node = ray.get_runtime_context().get_node_id()
        self.backend = _Stamped(settings.build(), name, self.node)
        self.backend.load()  # minutes for a big model: once per replica (and per restart)
        self.contexts: dict[str, ChunkContext] = {}

    def ready(self) -> dict[str, Any]:
        import ray

        return {"name": self.name, "node": self.node, "ip": ray.util.get_node_ip_address(), "pid": os.getpid(),
                "host": socket.gethostname(), "backend": self.backend.name, "model": self.backend.model}

    def run_work(self, work: list, key: str, boxed: list) -> ChunkResult:
        """The pure pipeline on one chunk. The context travels once per run, boxed in a
        list so Ray hands over the reference and the replica fetches it only when new."""
        if key not in self.contexts:
            import ray

            self.contexts = {key: ray.get(boxed[0])}  # one run at a time: drop the previous one
        return run_work(work, self.backend, self.contexts[key])

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return self.backend.generate(requests)


@dataclass
class Job:
    """One call to make on some replica: `method(*args)`, with its tries."""

    index: int
    method: str
    args: tuple
    tries: int = 0
    workers: list[str] = field(default_factory=list)
    error: str = ""
    retried: bool = False


@dataclass
class Handle:
    name: str
    actor: Any
    info: dict[str, Any] = field(default_factory=dict)
    alive: bool = True
    ping: Any = None  # an ObjectRef of `ready()` while the replica is down
    ping_at: float = 0.0
    pings: int = 0


def sized(settings: BackendSettingsBase, cpus: float) -> BackendSettingsBase:
    """A CPU backend that would take every core of the machine (`n_threads` unset) takes its
    replica's CPUs instead, so replicas sharing a node do not oversubscribe it."""
    if "n_threads" in type(settings).model_fields and getattr(settings, "n_threads") is None:
        return settings.model_copy(update={"n_threads": max(1, math.ceil(cpus))})
    return settings


def _one_line(exc: BaseException, limit: int = 500) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:limit]


def reachable(address: str, timeout_s: float = 5.0) -> None:
    """A GCS address that refuses connections fails here in seconds, not in ray.init's retries."""
    if address in {"local", "auto"}:
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise ClusterError(f"cluster.address: nothing answers at {address} ({exc}); start the head there with "
                           "`ray start --head --port PORT`, or fix --ray-address / RAY_ADDRESS") from None


class ReplicaPool:
    """The replicas of one run, seen from the driver; a `Backend` for whole batches."""

    def __init__(self, cluster: ClusterSettings, backend: BackendSettingsBase) -> None:
        self.cluster, self.settings = cluster, backend
        probe = backend.build()  # cheap: what the catalog records as backend and model
        self.name, self.model = probe.name, probe.model
        self.replicas: list[Handle] = []
        self.groups: list[Any] = []
        self.events: list[tuple[float, str, str, str]] = []  # (time, event, replica, detail)
        self.requeued = 0  # jobs sent back to the queue after a failure
        self.recovered: list[tuple[float, int, str]] = []  # (time, job, replica): a requeued job finished
        self._owns_connection = False
        self._ray: Any = None

    # -- life cycle ---------------------------------------------------------------------

    def load(self) -> None:
        if not self.replicas:
            self.start()

    def start(self) -> "ReplicaPool":
        ray = self._ray = import_ray()
        address = self.cluster.resolved_address()
        if ray.is_initialized():
            current = ray.get_runtime_context().gcs_address
            if address != "local" and address.removeprefix("ray://") != current:
                raise ClusterError(f"cluster.address: this process is already connected to the Ray cluster at "
                                   f"{current}, not {address}")
        else:
            reachable(address)
            kwargs: dict[str, Any] = {"include_dashboard": False, "namespace": "synth", "log_to_driver": True}
            if address == "local":
                kwargs["object_store_memory"] = self.cluster.object_store_mb * 2 ** 20
            try:
                ray.init(address=address, **kwargs)
            except Exception as exc:  # ConnectionError, version mismatch, ...
                raise ClusterError(f"cluster.address: could not join the Ray cluster at {address}: "
                                   f"{_one_line(exc)}") from None
            self._owns_connection = True
        try:
            self._start_replicas(self.replica_count())
        except BaseException:
            self.close()
            raise
        return self

    def replica_count(self) -> int:
        c = self.cluster
        if c.replicas != "auto":
            return int(c.replicas)
        total = self._ray.cluster_resources()
        if c.gpus_per_replica:
            n, what = int(total.get("GPU", 0) // c.gpus_per_replica), f"{c.gpus_per_replica} GPU(s)"
        else:
            n, what = int(total.get("CPU", 0) // c.cpus_per_replica), f"{c.cpus_per_replica:g} CPU(s)"
        for resource, amount in c.resources.items():
            n = min(n, int(total.get(resource, 0) // amount))
        if n < 1:
            raise ClusterError(f"cluster.replicas: auto found no room for one replica of {what} on the cluster "
                               f"(it has {total.get('GPU', 0):g} GPUs, {total.get('CPU', 0):g} CPUs); set "
                               "gpus_per_replica / cpus_per_replica, or add nodes")
        return n

    def _actor_options(self, index: int) -> dict[str, Any]:
        c = self.cluster
        options: dict[str, Any] = {"max_restarts": -1, "max_task_retries": 0, "num_cpus": c.cpus_per_replica,
                                   "num_gpus": c.gpus_per_replica, "resources": dict(c.resources) or None}
        if c.gpus_per_replica > 1:  # tensor parallel: the engine's workers share one node's GPUs
            from ray.util.placement_group import placement_group
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            bundles = [{"GPU": 1, "CPU": c.cpus_per_replica}] * c.gpus_per_replica
            group = placement_group(bundles, strategy="STRICT_PACK", name=f"synth-replica-{index}")
            self.groups.append(group)
            options.update(num_gpus=0, num_cpus=0, scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=group, placement_group_capture_child_tasks=True))
        return options

    def _start_replicas(self, n: int) -> None:
        ray = self._ray
        remote = ray.remote(Replica)
        settings = sized(self.settings, self.cluster.cpus_per_replica)
        for i in range(n):
            name = f"replica-{i}"
            actor = remote.options(**self._actor_options(i)).remote(settings, name)
            self.replicas.append(Handle(name, actor))
        refs = [h.actor.ready.remote() for h in self.replicas]
        waiting = dict(zip(refs, self.replicas))
        deadline = time.monotonic() + self.cluster.ready_timeout_s
        while waiting:
            ready, _ = ray.wait(list(waiting), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                free = ray.available_resources()
                raise ClusterError(
                    f"cluster: {len(waiting)} of {n} replicas did not start within {self.cluster.ready_timeout_s:g} s "
                    f"(free on the cluster now: {free.get('GPU', 0):g} GPUs, {free.get('CPU', 0):g} CPUs; each "
                    f"replica needs {self.cluster.gpus_per_replica} GPU(s), {self.cluster.cpus_per_replica:g} CPU(s)): "
                    "lower cluster.replicas, add nodes, or raise cluster.ready_timeout_s")
            handle = waiting.pop(ready[0])
            try:
                handle.info = ray.get(ready[0])
            except Exception as exc:
                raise ClusterError(f"cluster: {handle.name} could not load the {self.name} backend: "
                                   f"{_one_line(exc, 1500)}") from None
            self._event("ready", handle, f"node {handle.info['node'][:12]} pid {handle.info['pid']}")

    def put(self, value: Any) -> Any:
        """`value` in the cluster's object store (an ObjectRef)."""
        self.load()
        return self._ray.put(value)

    def close(self) -> None:
        ray = self._ray
        if ray is None:
            return
        for handle in self.replicas:
            try:
                ray.kill(handle.actor, no_restart=True)
            except Exception:  # already gone with its node
                pass
        for group in self.groups:
            try:
                from ray.util.placement_group import remove_placement_group

                remove_placement_group(group)
            except Exception:
                pass
        self.replicas, self.groups = [], []
        if self._owns_connection and ray.is_initialized():
            ray.shutdown()
        self._owns_connection = False

    def __enter__(self) -> "ReplicaPool":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- health ---------------------------------------------------------------------------

    def _event(self, kind: str, handle: Handle, detail: str = "") -> None:
        self.events.append((time.time(), kind, handle.name, detail))
        log.info("%s %s %s", handle.name, kind, detail)

    def alive(self) -> list[Handle]:
        return [h for h in self.replicas if h.alive]

    def _mark_down(self, handle: Handle, why: str) -> None:
        if handle.alive:
            handle.alive, handle.pings, handle.ping = False, 0, None
            handle.ping_at = time.monotonic()
            self._event("down", handle, why)

    def _poll_pings(self) -> None:
        """Ping every replica that is down; one that answers takes work again."""
        ray = self._ray
        for handle in self.replicas:
            if handle.alive:
                continue
            if handle.ping is None:
                if time.monotonic() >= handle.ping_at:
                    handle.ping = handle.actor.ready.remote()
                continue
            done, _ = ray.wait([handle.ping], timeout=0)
            if not done:
                continue
            try:
                handle.info = ray.get(handle.ping)
            except Exception:  # still restarting, or its node is gone: ask again later
                handle.ping = None
                handle.ping_at = time.monotonic() + PING_BACKOFF_S[min(handle.pings, len(PING_BACKOFF_S) - 1)]
                handle.pings += 1
                continue
            handle.alive, handle.ping = True, None
            self._event("back", handle, f"node {handle.info['node'][:12]} pid {handle.info['pid']}")

    # -- dispatch ---------------------------------------------------------------------------

    def dispatch(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, Any]]:
        """Run every job on some replica; yields (job, result) as they finish, result None
        for a job given up after `max_chunk_tries` (job.error says why)."""
        ray = self._ray
        from ray.exceptions import RayActorError, RayError

        queue: deque[Job] = deque(jobs)
        in_flight: dict[Any, tuple[Job, Handle]] = {}
        load = {h.name: 0 for h in self.replicas}
        stalled_since: float | None = None
        while queue or in_flight:
            self._poll_pings()
            self._fill(queue, in_flight, load)
            if not in_flight:  # work left and no replica alive
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > self.cluster.ready_timeout_s:
                    raise ClusterError(f"cluster: no replica alive for {self.cluster.ready_timeout_s:g} s with "
                                       f"{len(queue)} jobs left (events: {self.events[-3:]})")
                time.sleep(0.2)
                continue
            stalled_since = None
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            finished: list[tuple[Job, Any]] = []
            for ref in ready:
                job, handle = in_flight.pop(ref)
                load[handle.name] -= 1
                try:
                    finished.append((job, ray.get(ref)))
                    if job.retried:
                        self.recovered.append((time.time(), job.index, handle.name))
                    continue
                except RayActorError as exc:  # the replica died or is unreachable: it gets no work for now
                    self._mark_down(handle, _one_line(exc, 200))
                    job.error = _one_line(exc)
                except RayError as exc:  # an error inside the job, or its result lost with a node
                    job.error = _one_line(exc)
                job.tries += 1
                if job.tries >= self.cluster.max_chunk_tries:
                    log.warning("job %d given up after %d tries: %s", job.index, job.tries, job.error)
                    finished.append((job, None))
                else:
                    job.retried = True
                    self.requeued += 1
                    queue.appendleft(job)  # first in line for the next free replica
            self._fill(queue, in_flight, load)  # keep the replicas busy while the caller commits
            yield from finished

    def _fill(self, queue: deque, in_flight: dict, load: dict[str, int]) -> None:
        while queue:
            free = [h for h in self.alive() if load.get(h.name, 0) < self.cluster.chunks_per_replica]
            if not free:
                return
            handle = min(free, key=lambda h: load.get(h.name, 0))
            job = queue.popleft()
            job.workers.append(handle.name)
            in_flight[getattr(handle.actor, job.method).remote(*job.args)] = (job, handle)
            load[handle.name] = load.get(handle.name, 0) + 1

    # -- the Backend contract: one batch, spread over the replicas ---------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """The batch in one contiguous part per live replica, answered in order; a part
        that fails on every try comes back as error values (a backend never raises)."""
        self.load()
        requests = list(requests)
        if not requests:
            return []
        parts = max(1, min(len(requests), len(self.alive()) or len(self.replicas)))
        size = -(-len(requests) // parts)
        pieces = [requests[i:i + size] for i in range(0, len(requests), size)]
        out: list[list[GenerationResult]] = [[] for _ in pieces]
        for job, result in self.dispatch(Job(i, "generate", (piece,)) for i, piece in enumerate(pieces)):
            out[job.index] = result if result is not None else [
                GenerationResult(key=r.key, error=f"replicas failed {job.tries} times: {job.error}")
                for r in pieces[job.index]]
        return [result for part in out for result in part]


class RayExecutor:
    """The ledger's executor on a pool: each chunk is a job; results in completion order."""

    def __init__(self, pool: ReplicaPool, ctx: ChunkContext) -> None:
        self.pool, self.ctx = pool, ctx
        self._key, self._boxed = uuid.uuid4().hex, None

    def map(self, chunks: Sequence[list]) -> Iterator[ChunkResult | ChunkFailed]:
        self.pool.load()
        if self._boxed is None:
            self._boxed = [self.pool.put(self.ctx)]  # once per run; the replicas fetch it once
        jobs = [Job(i, "run_work", (list(work), self._key, self._boxed)) for i, work in enumerate(chunks)]
        for job, result in self.pool.dispatch(jobs):
            if result is None:
                yield ChunkFailed(list(chunks[job.index]), job.tries, job.error, job.workers)
            else:
                yield result
