"""Gradient diversity (G-Vendi, Prismatic Synthesis, arXiv 2505.20161): how many different
directions a set of samples would push a student in.

For each sample: the gradient of the student's loss on it (the answer's NLL given the
question, synth/measures/student.py), taken with respect to fresh LoRA B matrices. At
initialisation (B = 0) that gradient is the layer's full weight gradient times the fixed
random A^T, so it is already a seeded random projection of every adapted layer's
gradient. It is then sketched to `dim` numbers with a seeded CountSketch (each coordinate
added, with a random sign, to one of `dim` outputs: a sparse Johnson-Lindenstrauss
projection that costs one pass over the gradient instead of a dense matrix of
params x dim) and L2-normalised. G-Vendi is the Vendi score of those unit vectors:
exp(entropy of the eigenvalues of K / n), K their Gram matrix (synth.measures.figures.vendi_score):
1 when every sample pushes the same way, up to min(n, dim) when all are orthogonal.

Left out: the paper's proxy model is first trained briefly on the data; here the
untrained student is the proxy, so values compare across sets for the same student,
dim and seed, not with the paper's numbers. One backward pass per sample: its cost per
row is in BENCHMARKS.md.

>>> import numpy as np
>>> round(vendi_of_gradients(np.ones((3, 4))), 3)
1.0
>>> round(vendi_of_gradients(np.eye(3)), 3)
3.0
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from synth.measures.figures import vendi_score
from synth.measures.student import LoraSettings, Pair, add_lora, answer_nll, collate, encode, load_student


@dataclass(frozen=True)
class GVendiSettings:
    dim: int = 1024
    seed: int = 0
    max_length: int = 256
    max_rows: int = 200            # a fixed sample of rows beyond this (each costs a backward pass)
    lora: LoraSettings = LoraSettings()


def vendi_of_gradients(vectors: np.ndarray) -> float | None:
    """Vendi score of the rows of `vectors` after L2 normalisation."""
    x = np.asarray(vectors, dtype=np.float64)
    if not len(x):
        return None
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return vendi_score(x)


class GradientSketcher:
    """The student with LoRA adapters and a seeded CountSketch over its B matrices."""

    def __init__(self, student: Path, settings: GVendiSettings, device: str | None = None) -> None:
        import torch

        self.settings = settings
        model, self.tokenizer = load_student(student, device)
        self.model = add_lora(model, settings.lora, settings.seed)
        self.params = [p for name, p in self.model.named_parameters() if "lora_B" in name]
        for name, p in self.model.named_parameters():
            p.requires_grad_("lora_B" in name)  # A's gradient is zero while B is: skip it
        self.device = next(self.model.parameters()).device
        size = sum(p.numel() for p in self.params)
        generator = torch.Generator().manual_seed(settings.seed)
        self.bucket = torch.randint(0, settings.dim, (size,), generator=generator).to(self.device)
        self.sign = (torch.randint(0, 2, (size,), generator=generator) * 2 - 1).float().to(self.device)
        self.model.eval()  # no dropout; gradients still flow

    def sketch(self, pair: Pair) -> np.ndarray | None:
        import torch

        encoded = encode(self.tokenizer, pair, self.settings.max_length)
        if encoded is None:
            return None
        batch = collate([encoded], self.tokenizer.pad_token_id, self.device.type)
        total, count = answer_nll(self.model, batch)
        self.model.zero_grad(set_to_none=True)
        (total / count.clamp(min=1)).backward()
        flat = torch.cat([p.grad.reshape(-1).float() for p in self.params])
        out = torch.zeros(self.settings.dim, device=self.device).index_add_(0, self.bucket, flat * self.sign)
        return out.cpu().numpy()

    def vectors(self, pairs: Sequence[Pair], progress: Callable[[int], None] | None = None) -> np.ndarray:
        rows = []
        for pair in pairs:
            vector = self.sketch(pair)
            if vector is not None:
                rows.append(vector)
            if progress:
                progress(1)
        return np.stack(rows) if rows else np.zeros((0, self.settings.dim), dtype=np.float32)


def sample_pairs(pairs: Sequence[Pair], k: int, seed: int = 0) -> list[Pair]:
    """At most k pairs: a fixed, seeded sample kept in the set's order."""
    if len(pairs) <= k:
        return list(pairs)
    keep = sorted(np.random.default_rng(seed).choice(len(pairs), size=k, replace=False))
    return [pairs[i] for i in keep]


def g_vendi(sketcher: GradientSketcher, pairs: Sequence[Pair],
            progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """{g_vendi, g_vendi_rows, g_vendi_s_per_row} of a set (its fixed sample)."""
    chosen = sample_pairs(pairs, sketcher.settings.max_rows, sketcher.settings.seed)
    started = time.perf_counter()
    vectors = sketcher.vectors(chosen, progress)
    seconds = time.perf_counter() - started
    return {"g_vendi": vendi_of_gradients(vectors), "g_vendi_rows": len(vectors),
            "g_vendi_s_per_row": round(seconds / len(chosen), 3) if chosen else None}
