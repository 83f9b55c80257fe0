"""Code answers: run the generated function against its tests, HumanEval style.

The program is the sample's prompt (a signature and docstring, when the sample has one)
followed by its solution; the tests define `check(candidate)` and are called with the
entry point, as in HumanEval. Tests come from the sample or, for answer augmentation,
from the seed row (`CodeContext.test` / `entry_point`). Everything runs in the
subprocess sandbox (synth/verify/sandbox.py); nothing generated is compiled or executed
in this process. A solution wrapped in a Markdown code fence is unwrapped first.

Verdict reasons: `failed: AssertionError: ...`, `timeout: ...`, `memory_limit: ...`,
`network_blocked: ...`, `syntax_error: ...`, `crashed: ...`, `test_error: ...`,
`no_tests: ...`.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from pydantic import Field

from synth.verify.base import BaseVerifier, Verdict, VerifierSettingsBase, VerifyCase
from synth.verify.sandbox import run_check

MAX_PARALLEL = 8  # sandboxes at once in verify_many, below os.cpu_count()
MAX_PROGRAM_CHARS = 200_000

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


class CodeVerifySettings(VerifierSettingsBase):
    """`verify: {kind: code}`: limits of one sandboxed test run, and `tries`: solutions sampled
    (in one batch) for a new problem, whose tests the question stage wrote in its own request
    before any solution existed; the first solution that passes them is kept (CodeT, KodCode)."""

    kind: Literal["code"] = "code"
    timeout_s: float = Field(default=5.0, gt=0, le=300)
    memory_mb: int = Field(default=256, ge=16, le=16384)
    tries: int = Field(default=3, ge=1, le=10)

    def build(self) -> "CodeVerifier":
        return CodeVerifier(self.timeout_s, self.memory_mb, self.tries)


@dataclass(frozen=True)
class CodeContext:
    answer_field: str = "answer"  # the field that holds the solution
    # HumanEval layout: prompt + solution is the program, `test` defines check(candidate)
    prompt_field: str | None = "prompt"  # prepended when the sample has it (a bare function body)
    test_field: str = "test"
    entry_point_field: str = "entry_point"
    test: str | None = None  # the seed's tests, when the sample does not carry its own
    entry_point: str | None = None
    timeout_s: float = 5.0
    memory_mb: int = 256


def unfence(text: str) -> str:
    """The first fenced code block of `text`, or `text` itself when it has none."""
    match = _FENCE.search(text)
    return match.group(1) if match else text


def assemble_program(fields: dict[str, Any], ctx: CodeContext) -> tuple[str, str, str] | str:
    """(program, test, entry_point), or the reason why there is nothing to run."""
    solution = unfence(str(fields.get(ctx.answer_field, "") or ""))
    if not solution.strip():
        return f"empty_solution: the {ctx.answer_field!r} field holds no code"
    prompt = str(fields.get(ctx.prompt_field, "") or "") if ctx.prompt_field else ""
    # a model that repeats the signature gives the whole function; else prompt + body
    # (a parsed prompt has lost its trailing newline: the body must still start on its own line)
    program = (solution if not prompt or solution.lstrip().startswith(prompt.strip())
               else prompt.rstrip("\n") + "\n" + solution)
    test = ctx.test if ctx.test is not None else fields.get(ctx.test_field)
    entry = ctx.entry_point if ctx.entry_point is not None else fields.get(ctx.entry_point_field)
    if not test or not str(test).strip():
        return f"no_tests: no {ctx.test_field!r} field in the sample and no seed tests in the context"
    if not entry:
        return f"no_tests: no {ctx.entry_point_field!r} (the function the tests call)"
    if len(program) > MAX_PROGRAM_CHARS:
        return f"too_long: the program has {len(program)} characters, limit {MAX_PROGRAM_CHARS}"
    return program, str(test), str(entry).strip()


class CodeVerifier(BaseVerifier):
    kind = "code"

    def __init__(self, timeout_s: float = 5.0, memory_mb: int = 256, tries: int = 1) -> None:
        self.timeout_s, self.memory_mb, self.tries = timeout_s, memory_mb, tries

    def answer_copies(self, has_reference: bool) -> int:
        """A new problem's own tests judge `tries` solutions; a seed problem's solution, one."""
        return 1 if has_reference else self.tries

    def context(self, case: VerifyCase) -> CodeContext:
        """The seed's tests and entry point (answer augmentation keeps the seed's prompt);
        a sample that carries its own `test` field uses that instead."""
        seed = case.seed or {}
        return CodeContext(answer_field=case.answer_field, test=seed.get("test"), entry_point=seed.get("entry_point"),
                           timeout_s=self.timeout_s, memory_mb=self.memory_mb)

    def verify(self, fields: dict[str, Any], ctx: CodeContext) -> Verdict:
        parts = assemble_program(fields, ctx)
        if isinstance(parts, str):
            return Verdict.failed(parts, {"verifier": "code", "status": parts.split(":", 1)[0]})
        program, test, entry = parts
        run = run_check(program, test, entry, timeout_s=ctx.timeout_s, memory_mb=ctx.memory_mb)
        detail = {"verifier": "code", "status": run.status, "returncode": run.returncode, "wall_s": run.wall_s,
                  "isolation": run.isolation, "stdout": run.stdout, "stderr": run.stderr}
        if run.passed:
            return Verdict.passed(detail)
        return Verdict.failed(f"{run.status}: {run.message}", detail)

    def verify_many(self, items: Sequence[tuple[dict[str, Any], CodeContext]]) -> list[Verdict]:
        if len(items) <= 1:
            return [self.verify(fields, ctx) for fields, ctx in items]
        workers = max(1, min(len(items), os.cpu_count() or 1, MAX_PARALLEL))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
            return list(pool.map(lambda item: self.verify(*item), items))
