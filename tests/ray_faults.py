"""A backend that crashes its replica's process on chosen requests (tests/test_ray.py).

Built inside a Ray replica from its settings, like any backend: a request whose key is
in `crash_keys` ends the process at once (`os._exit`), the way a segfault or the OOM
killer would, so the chunk that holds it fails on every replica that tries it.
"""

from __future__ import annotations

import os
from typing import Sequence

from synth.backends.scripted import ScriptedBackend, ScriptedSettings


class CrashingSettings(ScriptedSettings):
    crash_keys: tuple[str, ...] = ()

    def build(self) -> "CrashingBackend":
        backend = CrashingBackend(latency_s=self.latency_s)
        backend.crash_keys = set(self.crash_keys)
        return backend


class CrashingBackend(ScriptedBackend):
    crash_keys: set[str] = set()

    def generate(self, requests: Sequence) -> list:
        if any(request.key in self.crash_keys for request in requests):
            os._exit(1)
        return super().generate(requests)
