"""Code answers: run the generated function against its tests, HumanEval style.

The program is the sample's prompt (a signature and docstring, when the sample has one)
followed by its solution; the tests define `check(candidate)` and are called with the
entry point, as in HumanEval. Tests come from the sample or, for answer augmentation,
from the seed row (`VerifyContext.test` / `entry_point`). Everything runs in the
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
from typing import Any, Sequence

from synth.verify import Verdict, VerifyContext
from synth.verify.sandbox import run_check

MAX_PARALLEL = 8  # sandboxes at once in verify_many, below os.cpu_count()
MAX_PROGRAM_CHARS = 200_000

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def unfence(text: str) -> str:
    """The first fenced code block of `text`, or `text` itself when it has none."""
    match = _FENCE.search(text)
    return match.group(1) if match else text


def assemble(fields: dict[str, Any], ctx: VerifyContext) -> tuple[str, str, str] | str:
    """(program, test, entry_point), or the reason why there is nothing to run."""
    solution = unfence(str(fields.get(ctx.answer_field, "") or ""))
    if not solution.strip():
        return f"empty_solution: the {ctx.answer_field!r} field holds no code"
    prompt = str(fields.get(ctx.prompt_field, "") or "") if ctx.prompt_field else ""
    # a model that repeats the signature gives the whole function; else prompt + body
    program = solution if not prompt or solution.lstrip().startswith(prompt.strip()) else prompt + solution
    test = ctx.test if ctx.test is not None else fields.get(ctx.test_field)
    entry = ctx.entry_point if ctx.entry_point is not None else fields.get(ctx.entry_point_field)
    if not test or not str(test).strip():
        return f"no_tests: no {ctx.test_field!r} field in the sample and no seed tests in the context"
    if not entry:
        return f"no_tests: no {ctx.entry_point_field!r} (the function the tests call)"
    if len(program) > MAX_PROGRAM_CHARS:
        return f"too_long: the program has {len(program)} characters, limit {MAX_PROGRAM_CHARS}"
    return program, str(test), str(entry).strip()


class CodeVerifier:
    kind = "code"

    def verify(self, fields: dict[str, Any], ctx: VerifyContext) -> Verdict:
        parts = assemble(fields, ctx)
        if isinstance(parts, str):
            return Verdict(False, parts, {"verifier": "code", "status": parts.split(":", 1)[0]})
        program, test, entry = parts
        run = run_check(program, test, entry, timeout_s=ctx.timeout_s, memory_mb=ctx.memory_mb)
        detail = {"verifier": "code", "status": run.status, "returncode": run.returncode, "wall_s": run.wall_s,
                  "isolation": run.isolation, "stdout": run.stdout, "stderr": run.stderr}
        if run.passed:
            return Verdict(True, None, detail)
        return Verdict(False, f"{run.status}: {run.message}", detail)

    def verify_many(self, items: Sequence[tuple[dict[str, Any], VerifyContext]]) -> list[Verdict]:
        if len(items) <= 1:
            return [self.verify(fields, ctx) for fields, ctx in items]
        workers = max(1, min(len(items), os.cpu_count() or 1, MAX_PARALLEL))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
            return list(pool.map(lambda item: self.verify(*item), items))
