"""A real multi-node Ray cluster on this machine, for the Ray tests and benchmarks.

A head with 0 CPUs (it schedules nothing: every replica lands on a worker node) and
worker nodes of 1 CPU each, all on 127.0.0.1, each with a small object store set
explicitly (a node reserves 30 % of the machine's memory otherwise), no dashboard, no
usage statistics. Built with `ray.cluster_utils.Cluster`: every process is started
here and only those are stopped (`remove_worker`, `shutdown`); never `ray stop`,
which kills every Ray process on the host, other sessions' included.

`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` makes Ray resolve 127.0.0.1 as 127.0.0.1: by
default a driver turns a loopback address into the machine's outward IP, where a
cluster bound to loopback does not listen (the driver then retries for minutes).
"""

from __future__ import annotations

import os
import socket
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

OBJECT_STORE = 80 * 2 ** 20
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


class LocalCluster:
    """Head (0 CPUs) + `workers` nodes of `cpus` CPU(s) (and `gpus` GPUs: a GPU machine's
    check) each, on 127.0.0.1."""

    def __init__(self, workers: int = 2, cpus: int = 1, gpus: int = 0) -> None:
        from ray.cluster_utils import Cluster

        started = time.monotonic()
        self.cpus, self.gpus = cpus, gpus
        self.cluster = Cluster(initialize_head=True, head_node_args=dict(
            num_cpus=0, include_dashboard=False, dashboard_port=free_port(), object_store_memory=OBJECT_STORE,
            node_ip_address=LOOPBACK, gcs_server_port=free_port()))
        for _ in range(workers):
            self.add_worker()
        self.start_s = time.monotonic() - started

    @property
    def address(self) -> str:
        return self.cluster.address

    @property
    def workers(self) -> list:
        return sorted(self.cluster.worker_nodes, key=lambda node: node.node_id)

    def add_worker(self):
        return self.cluster.add_node(num_cpus=self.cpus, num_gpus=self.gpus, object_store_memory=OBJECT_STORE,
                                     node_ip_address=LOOPBACK, include_dashboard=False)

    def ensure_workers(self, n: int) -> None:
        """Back to `n` worker nodes after a test removed some."""
        while len(self.cluster.worker_nodes) < n:
            self.add_worker()

    def remove_worker(self, node_id: str) -> float:
        """Kill one worker node's processes at once (no graceful drain): a lost machine.
        Returns the time it was killed."""
        node = next(n for n in self.cluster.worker_nodes if n.node_id == node_id)
        killed = time.time()
        self.cluster.remove_node(node, allow_graceful=False)
        return killed

    def shutdown(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        self.cluster.shutdown()
