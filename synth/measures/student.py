"""A small student model for probing data: load it, encode question/answer pairs, score them.

The probe (synth/measures/probe.py) and gradient diversity (synth/measures/gvendi.py) share this: the
student is any local transformers folder (by default the embedded SmolLM2-135M, converted
once into `.models/` by scripts/gguf_to_hf.py); a pair is rendered with the student's chat
template (user: the question, assistant: the answer) and only the answer's tokens count
in the loss, so the figure is the student's negative log-likelihood of the reference
answer given the question.

torch, transformers and peft (the `probe` extra) are imported inside the functions: the
package imports without them, and `require()` says in one line what to install.
Nothing is downloaded: a folder that is not there is an error, never a Hub lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from synth.errors import SynthError

INSTALL_HINT = "pip install '.[probe]' (or `make install`)"
IGNORE = -100  # label of a token that is not scored (prompt, padding)


class StudentUnavailable(SynthError, RuntimeError):
    """The probe's libraries or the student model are missing; the message says what to do."""


@dataclass(frozen=True)
class Pair:
    question: str
    answer: str


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8
    alpha: int = 16
    target_modules: str | tuple[str, ...] = "all-linear"


def require() -> None:
    """Raise StudentUnavailable unless torch, transformers and peft import."""
    missing = []
    for name in ("torch", "transformers", "peft"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise StudentUnavailable(f"the student probe needs {', '.join(missing)} (the `probe` extra): {INSTALL_HINT}")


def default_student() -> Path:
    """The embedded SmolLM2-135M as a transformers folder (scripts/gguf_to_hf.py makes it)."""
    from synth.backends.vllm import MARKER_FILE, embedded_hf_dir

    path = embedded_hf_dir(must_exist=False)
    if not (path / MARKER_FILE).is_file():
        raise StudentUnavailable(f"no converted student at {path}: run `python scripts/gguf_to_hf.py` once "
                                 "(`make install` does it), or pass --student DIR")
    return path


def check_student_dir(path: Path) -> Path:
    """A local transformers folder, or ValueError naming what is missing (bad input)."""
    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise ValueError(f"--student: {path} is not a transformers model folder (no config.json there); "
                         "pass a local folder saved with save_pretrained")
    return path


def device_name() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_student(path: Path, device: str | None = None):
    """(model, tokenizer): float32 on the CPU, bfloat16 on CUDA; local files only."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per probe (the caller's), not one per weight load
    device = device or device_name()
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=True).to(device)
    model.config.use_cache = False
    return model, tokenizer


def add_lora(model, lora: LoraSettings, seed: int):
    """The model with fresh LoRA adapters, initialised from `seed` (peft)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=0.0, bias="none",
                        target_modules=list(lora.target_modules) if not isinstance(lora.target_modules, str)
                        else lora.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def prompt_text(tokenizer, question: str) -> str:
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
    return f"Question: {question}\nAnswer: "


def encode(tokenizer, pair: Pair, max_length: int) -> tuple[list[int], list[int]] | None:
    """(input ids, labels) of one pair, cut to `max_length` tokens; labels score only the
    answer (and the end-of-turn token). None when no answer token fits."""
    prompt = tokenizer(prompt_text(tokenizer, pair.question), add_special_tokens=False)["input_ids"]
    answer = tokenizer(pair.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    prompt = prompt[-(max_length // 2):] if len(prompt) > max_length // 2 else prompt  # keep room for the answer
    ids = (prompt + answer)[:max_length]
    labels = ([IGNORE] * len(prompt) + answer)[:max_length]
    if all(label == IGNORE for label in labels):
        return None
    return ids, labels


def collate(encoded: Sequence[tuple[list[int], list[int]]], pad_id: int, device: str) -> dict[str, Any]:
    """Right-padded tensors for a batch of encoded pairs."""
    import torch

    width = max(len(ids) for ids, _ in encoded)
    ids = [seq + [pad_id] * (width - len(seq)) for seq, _ in encoded]
    labels = [lab + [IGNORE] * (width - len(lab)) for _, lab in encoded]
    mask = [[1] * len(seq) + [0] * (width - len(seq)) for seq, _ in encoded]
    return {"input_ids": torch.tensor(ids, device=device), "attention_mask": torch.tensor(mask, device=device),
            "labels": torch.tensor(labels, device=device)}


def answer_nll(model, batch: dict[str, Any]):
    """(summed NLL over the scored tokens, number of scored tokens) of a batch, as tensors."""
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits, labels = logits[:, :-1, :].float(), batch["labels"][:, 1:]
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE,
                            reduction="sum")
    return total, (labels != IGNORE).sum()
