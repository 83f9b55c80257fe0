"""Where a run generates: in the flow's own process (`kind: local`) or on a Ray cluster.

The recipe's `cluster:` section. With `kind: ray` the flow process stays the driver and
the catalog's one writer; the model runs in long-lived replica actors on the cluster
(synth/execution/ray.py), one per GPU or per `cpus_per_replica` cores, each loading the
recipe's backend once. Where a run happens is not part of what it makes: this section
is left out of the recipe's hash, so a run started locally resumes on a cluster and
the other way round.

The cluster's address comes from, in this order: `synth run --ray-address` (or the
deployment form's `ray_address`, either of which also turns `kind: ray` on), the
recipe's `cluster.address`, then the `RAY_ADDRESS` environment variable. `address:
local` starts a private Ray instance on this machine for the run (one box with several
GPUs: one replica per GPU, no cluster to set up). Ray itself is imported only when a
run uses it (`pip install '.[ray]'`).
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from synth.errors import SynthError

RAY_ADDRESS_ENV = "RAY_ADDRESS"


class ClusterError(SynthError, RuntimeError):
    """The cluster cannot be reached, or cannot hold the replicas; the message says what to do."""


class ClusterSettings(BaseModel):
    """`cluster: {kind: ray, address: HOST:6379, replicas: auto, gpus_per_replica: 1}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local", "ray"] = "local"
    # the head's GCS address (host:port, or ray://host:10001 through Ray Client), or `local`;
    # empty: --ray-address, else $RAY_ADDRESS
    address: str | None = Field(default=None, min_length=1)
    # a number, or `auto`: one replica per GPU group (gpus_per_replica > 0) or per
    # cpus_per_replica cores of the cluster (CPU backends)
    replicas: int | Literal["auto"] = "auto"
    gpus_per_replica: int = Field(default=0, ge=0, le=64)  # > 1: tensor parallel, STRICT_PACK on one node
    cpus_per_replica: float = Field(default=1, gt=0)
    resources: dict[str, float] = Field(default_factory=dict)  # custom node resources a replica needs
    chunks_per_replica: int = Field(default=2, ge=1, le=16)  # in flight at once: one running, one queued
    max_chunk_tries: int = Field(default=3, ge=1, le=20)  # a chunk failing this often is recorded as failed
    ready_timeout_s: float = Field(default=900, gt=0)  # a replica's start (model load) or restart
    object_store_mb: int = Field(default=512, ge=64)  # `address: local` only: the object store's size

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("write a number >= 1, or `auto` (one per GPU group or per cpus_per_replica cores)")
        return value

    def resolved_address(self) -> str:
        """The address to connect to; ClusterError saying where to write one."""
        address = self.address or os.environ.get(RAY_ADDRESS_ENV)
        if not address:
            raise ClusterError(
                "cluster.address: a Ray run needs the head's address: write `address: HOST:6379` (or "
                "`address: local` for a Ray instance on this machine), pass --ray-address, or set RAY_ADDRESS")
        return address

    def with_address(self, address: str | None) -> "ClusterSettings":
        """These settings pointed at `address` (a --ray-address): Ray, whatever the recipe said."""
        if not address:
            return self
        return self.model_copy(update={"kind": "ray", "address": address})
