"""A model replica on a Ray cluster: the actor's body, which runs on a cluster node.

`Replica` builds the recipe's backend (vllm, llamacpp, openai, scripted: any of them)
and loads it ONCE in `__init__`, then runs the pure chunk pipeline
(`synth.execution.pipeline.run_work`) or a plain batch (`generate`) as often as the driver asks
(synth/execution/ray.py), and returns plain rows stamped with its name and node (the
requests table's `worker` and `node`). It writes nothing: the driver is the catalog's
one writer. Ray is imported only inside its methods.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
from typing import Any, Sequence

from synth.backends.base import BackendSettingsBase, GenerationRequest, GenerationResult
from synth.execution.pipeline import ChunkContext, ChunkResult, run_work

# a replica reports nothing anywhere (vLLM's usage statistics, Hugging Face telemetry) unless told to
TELEMETRY_OFF = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def sized(settings: BackendSettingsBase, cpus: float) -> BackendSettingsBase:
    """A CPU backend that would take every core of the machine (`n_threads` unset) takes its
    replica's CPUs instead, so replicas sharing a node do not oversubscribe it."""
    if "n_threads" in type(settings).model_fields and getattr(settings, "n_threads") is None:
        return settings.model_copy(update={"n_threads": max(1, math.ceil(cpus))})
    return settings


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
