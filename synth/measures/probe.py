"""The student probe: does this data make a small model better at the task, or worse?

For each training set, a fresh copy of the student gets LoRA adapters and is fine-tuned
for the same number of steps with the same seed and settings (the rows in a seeded
order, cycled when a set has fewer than steps x batch rows), then scored on a held-out
set of questions with reference answers:
- held-out loss: the mean negative log-likelihood per token of the reference answers
  given the questions (lower is better; comparable across sets only under the same
  student, held-out set and settings);
- accuracy, where the task has a verifier (math: GSM8K's `#### N`): the student answers
  the first `accuracy_rows` held-out questions greedily and synth/verify/math.py compares
  its final number with the reference's.
The untrained student is scored the same way once: the baseline beside every set.

A pilot, not a benchmark: a few hundred rows and tens of steps tell junk from data that
moves the student towards the reference; they do not predict what a full fine-tune of a
large model reaches. Pure: plain rows in, plain figures out; no catalog (storage/tables/probes.py
records the results). torch, transformers and peft are imported inside the functions.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from synth.measures.student import LoraSettings, Pair, add_lora, answer_nll, collate, device_name, encode, load_student


@dataclass(frozen=True)
class ProbeSettings:
    # small by default: a step of 4 GSM8K pairs took about a minute on 2 busy CPU cores (BENCHMARKS.md)
    steps: int = 20
    batch_size: int = 4
    learning_rate: float = 1e-3
    max_length: int = 256          # tokens of question + answer; GSM8K pairs average about 225
    seed: int = 0
    heldout_rows: int = 64         # held-out pairs scored for the loss (the first N)
    accuracy_rows: int = 0         # held-out questions answered greedily (0: no accuracy)
    max_new_tokens: int = 192
    verifier: str | None = None    # "math" or None
    lora: LoraSettings = field(default_factory=LoraSettings)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["lora"] = asdict(self.lora)
        return out


@dataclass
class Score:
    loss: float
    tokens: int
    rows: int
    accuracy: float | None = None
    accuracy_rows: int = 0
    seconds: float = 0.0


@dataclass
class ProbeResult:
    label: str
    train_rows: int
    steps: int
    score: Score
    train_seconds: float
    first_loss: float | None = None  # training loss of the first and last step
    last_loss: float | None = None


@dataclass
class ProbeReport:
    student: str
    device: str
    settings: ProbeSettings
    baseline: Score
    results: list[ProbeResult]
    heldout_rows: int

    def as_dict(self) -> dict[str, Any]:
        return {"student": self.student, "device": self.device, "settings": self.settings.as_dict(),
                "heldout_rows": self.heldout_rows, "baseline": asdict(self.baseline),
                "results": [asdict(r) for r in self.results]}


Progress = Callable[[int], None]


def _encoded(tokenizer, pairs: Sequence[Pair], max_length: int) -> list[tuple[list[int], list[int]]]:
    return [e for e in (encode(tokenizer, p, max_length) for p in pairs) if e is not None]


def train(model, tokenizer, pairs: Sequence[Pair], settings: ProbeSettings, progress: Progress | None = None):
    """Fine-tune `model` (with LoRA adapters) in place; returns (first, last) step losses."""
    import torch

    data = _encoded(tokenizer, pairs, settings.max_length)
    if not data:
        raise ValueError("no training pair has an answer token within max_length")
    order = list(range(len(data)))
    rng = random.Random(settings.seed)
    rng.shuffle(order)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    device = next(model.parameters()).device.type
    model.train()
    losses, cursor = [], 0
    for _ in range(settings.steps):
        batch_ids = []
        while len(batch_ids) < settings.batch_size:
            if cursor == len(order):  # a new epoch over a small set: a new seeded order
                rng.shuffle(order)
                cursor = 0
            batch_ids.append(order[cursor])
            cursor += 1
        batch = collate([data[i] for i in batch_ids], tokenizer.pad_token_id, device)
        total, count = answer_nll(model, batch)
        loss = total / count.clamp(min=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        if progress:
            progress(1)
    model.eval()
    return (losses[0], losses[-1]) if losses else (None, None)


def heldout_loss(model, tokenizer, pairs: Sequence[Pair], max_length: int, batch_size: int = 8,
                 progress: Progress | None = None) -> tuple[float, int]:
    """(mean NLL per reference-answer token, tokens scored) over `pairs`."""
    import torch

    data = _encoded(tokenizer, pairs, max_length)
    device = next(model.parameters()).device.type
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            chunk = data[start:start + batch_size]
            nll, n = answer_nll(model, collate(chunk, tokenizer.pad_token_id, device))
            total, count = total + float(nll), count + int(n)
            if progress:
                progress(len(chunk))
    return (total / count if count else float("nan")), count


def greedy_answers(model, tokenizer, questions: Sequence[str], max_new_tokens: int, batch_size: int = 16,
                   progress: Progress | None = None) -> list[str]:
    """The student's greedy answers (left-padded batches)."""
    import torch

    from synth.measures.student import prompt_text

    device = next(model.parameters()).device.type
    tokenizer.padding_side = "left"
    answers: list[str] = []
    try:
        for start in range(0, len(questions), batch_size):
            chunk = [prompt_text(tokenizer, q) for q in questions[start:start + batch_size]]
            batch = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
                out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            answers += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            if progress:
                progress(len(chunk))
    finally:
        tokenizer.padding_side = "right"
    return answers


def accuracy(answers: Sequence[str], references: Sequence[str], verifier: str | None) -> float | None:
    """Share of answers the task's verifier accepts against the references (None: no verifier)."""
    if verifier != "math" or not answers:
        return None
    from synth.verify.math import MathContext, MathVerifier

    checker = MathVerifier(samples=1)
    passed = sum(checker.verify({"answer": a}, MathContext(reference=r)).ok for a, r in zip(answers, references))
    return round(passed / len(answers), 4)


def score(model, tokenizer, heldout: Sequence[Pair], settings: ProbeSettings,
          progress: Progress | None = None) -> Score:
    started = time.perf_counter()
    pairs = list(heldout[:settings.heldout_rows])
    loss, tokens = heldout_loss(model, tokenizer, pairs, settings.max_length, progress=progress)
    acc, n_acc = None, 0
    if settings.accuracy_rows and settings.verifier:
        asked = list(heldout[:settings.accuracy_rows])
        answers = greedy_answers(model, tokenizer, [p.question for p in asked], settings.max_new_tokens,
                                 progress=progress)
        acc, n_acc = accuracy(answers, [p.answer for p in asked], settings.verifier), len(asked)
    return Score(round(loss, 4), tokens, len(pairs), acc, n_acc, round(time.perf_counter() - started, 2))


def progress_total(n_sets: int, heldout: int, settings: ProbeSettings) -> int:
    """Progress-bar units of a whole probe: one a training step, one a held-out row scored."""
    per_score = min(heldout, settings.heldout_rows)
    if settings.accuracy_rows and settings.verifier:
        per_score += min(heldout, settings.accuracy_rows)
    return (n_sets + 1) * per_score + n_sets * settings.steps


def run_probe(student: Path, train_sets: dict[str, Sequence[Pair]], heldout: Sequence[Pair],
              settings: ProbeSettings, progress: Progress | None = None, device: str | None = None) -> ProbeReport:
    """Score the untrained student, then each set's fine-tuned student, on `heldout`.
    Each set starts from a freshly loaded student with adapters from the same seed."""
    device = device or device_name()
    model, tokenizer = load_student(student, device)
    baseline = score(model, tokenizer, heldout, settings, progress)
    results = []
    for label, pairs in train_sets.items():
        model, tokenizer = load_student(student, device)
        model = add_lora(model, settings.lora, settings.seed)
        started = time.perf_counter()
        first, last = train(model, tokenizer, pairs, settings, progress)
        train_seconds = round(time.perf_counter() - started, 2)
        results.append(ProbeResult(label, len(pairs), settings.steps, score(model, tokenizer, heldout, settings,
                                                                           progress),
                                   train_seconds, round(first, 4) if first is not None else None,
                                   round(last, 4) if last is not None else None))
    return ProbeReport(str(student), device, settings, baseline, results, min(len(heldout), settings.heldout_rows))
