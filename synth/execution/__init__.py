"""Where a run's chunks are generated: one executor contract, an executor per place.

`base.py` holds the contract (`Executor.map(chunks)` yields `ChunkResult` or `ChunkFailed`);
`executor_for(cluster, ...)` below picks the executor from the recipe's `cluster:` section,
never from the backend's type; `local.py` runs chunks in this process; `ray.py` runs them on a Ray cluster's
replicas (`replica.py`: the actor on the nodes). Every executor runs the same pure
function, `synth.execution.pipeline.run_work`; none of them opens the catalog (the ledger commits).
"""

from __future__ import annotations

from typing import Any

from synth.config.cluster import ClusterSettings
from synth.execution.base import Executor, WrapChunk
from synth.execution.pipeline import ChunkContext


def backend_for(recipe: Any) -> Any:
    """The run's backend: the recipe's, built here (`kind: local`), or a pool of replicas
    that each load it on the cluster (`kind: ray`; started by `load()`)."""
    if recipe.cluster.kind == "ray":
        from synth.execution.ray import ReplicaPool

        return ReplicaPool(recipe.cluster, recipe.backend)
    return recipe.backend.build()


def executor_for(cluster: ClusterSettings, backend: Any, ctx: ChunkContext,
                 wrap_chunk: WrapChunk | None = None) -> Executor:
    """The executor `cluster.kind` names. `wrap_chunk` wraps the in-process chunk function
    once (the Prefect flow makes it a retried task); a Ray replica runs chunks itself."""
    if cluster.kind == "ray":
        from synth.execution.ray import RayExecutor

        return RayExecutor(backend, ctx)
    from synth.execution.local import LocalExecutor

    return LocalExecutor(backend, ctx, wrap_chunk)
