"""Model replicas on a Ray cluster, seen from the driver: the pool, the dispatch, the executor.

The driver's side of generation on a Ray cluster; what runs on the nodes is
`synth.execution.replica.Replica`, a long-lived actor that loads the recipe's backend once. Actors
are created with `max_restarts=-1, max_task_retries=0`: Ray restarts a dead replica
(which reloads its model), and a task in flight when it died fails instead of being
replayed behind our back.

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
  `ChunkFailed` (the ledger records it), a part of a batch as error values. When a
  replica dies, only the job it was running counts a try; the jobs queued behind it do
  not, so a chunk that kills replicas cannot take innocent chunks down with it;
- no replica alive for `ready_timeout_s`: `ClusterError`.

Ids are deterministic, so a chunk that ran twice (a replica that died after finishing
it) is written once. Ray is imported only here and only when a pool starts.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

from synth.backends.base import BackendSettingsBase, GenerationRequest, GenerationResult
from synth.config.cluster import ClusterError, ClusterSettings
from synth.execution.replica import Replica, sized
from synth.execution.pipeline import ChunkContext, ChunkFailed, ChunkResult

log = logging.getLogger("synth.ray")
PING_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
def import_ray() -> Any:
    """Ray, with its usage statistics off; a clear error where it is not installed."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ClusterError("cluster.kind: ray needs Ray in this environment: pip install '.[ray]' (the same "
                           "Ray version on the driver and on every node; docs/scaling.md)") from None
    return ray


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
    sent: int = 0  # order of dispatch: a replica runs its jobs in this order


@dataclass
class Handle:
    name: str
    actor: Any
    info: dict[str, Any] = field(default_factory=dict)
    alive: bool = True
    ping: Any = None  # an ObjectRef of `ready()` while the replica is down
    ping_at: float = 0.0
    pings: int = 0


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
        self._sent = itertools.count()

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
                if ref not in in_flight:
                    continue  # settled with the other jobs of its lost replica
                job, handle = in_flight.pop(ref)
                load[handle.name] -= 1
                try:
                    self._done(job, handle, ray.get(ref), finished)
                except RayActorError as exc:  # the replica died or is unreachable: it gets no work for now
                    self._mark_down(handle, _one_line(exc, 200))
                    self._replica_lost(job, exc, handle, in_flight, load, queue, finished)
                except RayError as exc:  # an error inside the job, or its result lost with a node
                    self._failed(job, _one_line(exc), True, queue, finished)
            self._fill(queue, in_flight, load)  # keep the replicas busy while the caller commits
            yield from finished

    def _done(self, job: Job, handle: Handle, result: Any, finished: list) -> None:
        finished.append((job, result))
        if job.retried:
            self.recovered.append((time.time(), job.index, handle.name))

    def _failed(self, job: Job, error: str, counts: bool, queue: deque, finished: list) -> None:
        """Back to the front of the queue, or given up after its tries (`counts`: this failure is one)."""
        job.error = error
        job.tries += counts
        if job.tries >= self.cluster.max_chunk_tries:
            log.warning("job %d given up after %d tries: %s", job.index, job.tries, job.error)
            finished.append((job, None))
        else:
            job.retried = True
            self.requeued += 1
            queue.appendleft(job)

    def _replica_lost(self, job: Job, exc: BaseException, handle: Handle, in_flight: dict, load: dict,
                      queue: deque, finished: list) -> None:
        """A replica died with jobs in flight. It ran them one at a time in the order they were
        sent, so the first sent that failed was the one running: it costs a try; the jobs queued
        behind it go back without one. A chunk that kills every replica it reaches is given up
        after its tries; the chunks that waited behind it are not."""
        from ray.exceptions import RayError

        ray = self._ray
        mine = {ref: other for ref, (other, owner) in in_flight.items() if owner is handle}
        for ref in mine:
            del in_flight[ref]
            load[handle.name] -= 1
        if mine:
            ray.wait(list(mine), num_returns=len(mine), timeout=30)  # they fail within seconds of it
        outcomes: list[tuple[Job, Any]] = [(job, exc)]
        for ref, other in mine.items():
            try:
                outcomes.append((other, ray.get(ref, timeout=0)))  # it may have finished before the loss
            except RayError as error:  # lost with it (or still unresolved: sent again, written once)
                outcomes.append((other, error))
        running = True
        for other, outcome in sorted(outcomes, key=lambda pair: pair[0].sent):
            if isinstance(outcome, BaseException):
                self._failed(other, _one_line(outcome), running, queue, finished)
                running = False
            else:
                self._done(other, handle, outcome, finished)

    def _fill(self, queue: deque, in_flight: dict, load: dict[str, int]) -> None:
        while queue:
            free = [h for h in self.alive() if load.get(h.name, 0) < self.cluster.chunks_per_replica]
            if not free:
                return
            handle = min(free, key=lambda h: load.get(h.name, 0))
            job = queue.popleft()
            job.workers.append(handle.name)
            job.sent = next(self._sent)
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
    """The executor on a pool (synth/execution/base.py): each chunk is a job; results in
    completion order."""

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

    def started_note(self) -> str | None:
        pool = self.pool
        return (f"{len(pool.replicas)} replicas on the Ray cluster at {pool.cluster.resolved_address()}: "
                + ", ".join(f"{h.name} on node {h.info['node'][:12]}" for h in pool.replicas))

    def events_note(self) -> str | None:
        """The replicas' events, when one went down during the run."""
        events = self.pool.events
        if not any(kind == "down" for _, kind, _, _ in events):
            return None
        return "replica events: " + "; ".join(f"{name} {kind} {detail}"[:200] for _, kind, name, detail in events)
