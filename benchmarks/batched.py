"""Batched embedded generation: tokens/s with 1, 2, 4, 8 sequences decoded together.

For each model tier and each number of slots N, one llama-server child (the factory's
`LlamaServerBackend`, synth/backends/llama_server.py) serves the same GSM8K requests two
ways, in ABBA order by default:

  A  raw: a bare async HTTP client posts the chat completions straight to the server, N in flight;
  B  factory: `LlamaServerBackend.generate` on the same requests (the `openai` backend inside it).

Both plain and with the factory's JSON schema grammar (the GSM8K answer field with its
`#### N` pattern, as json_object + schema). The baseline is the old in-process path
(`LlamaCppBackend`, one sequence at a time, `parallel: 1`) on the same requests, measured
before and after the model's slot counts. Figures: tokens/s (completion tokens over wall
time) and tokens per CPU second (user + system time of the benchmark process and the
server child over the pass: on a shared machine it holds still where tokens/s follows the
CPU share the run gets); `x1` = the factory's figure over the one-stream baseline's;
`/raw` = factory over raw at the same N.

    python benchmarks/batched.py                                  # both tiers, N = 1 2 4 8
    python benchmarks/batched.py --models embedded --n 16 --max-tokens 64

The machine these run on is shared: read the ratios, which come from passes taken side by
side, rather than the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synth.backends.base import GenerationRequest, Sampling  # noqa: E402
from synth.task.formats import grammar_schema, whole_string_pattern  # noqa: E402

ANSWER_PATTERN = r"####[ ]*-?[0-9][0-9,]{0,12}(\.[0-9]{1,4})?$"  # recipes/gsm8k.yaml's answer field
SCHEMA = {"type": "object", "required": ["answer"],
          "properties": {"answer": {"type": "string", "minLength": 1, "pattern": whole_string_pattern(ANSWER_PATTERN)}}}
SYSTEM = "You solve grade-school math word problems step by step and end with '#### <final number>'."


def make_requests(n: int, max_tokens: int, structured: bool) -> list[GenerationRequest]:
    import json

    lines = (ROOT / "recipes/seeds/gsm8k_120.jsonl").read_text().splitlines()
    out = []
    for i in range(n):
        question = json.loads(lines[i % len(lines)])["question"]
        user = f"Solve this problem.\n\n{question}"
        if structured:
            user += '\n\nReply with JSON: {"answer": "<solution ending with #### N>"}'
        out.append(GenerationRequest(key=f"q{i}", messages=({"role": "system", "content": SYSTEM},
                                                          {"role": "user", "content": user}),
                                     sampling=Sampling(temperature=0.8, top_p=0.95, max_tokens=max_tokens, seed=i),
                                     json_schema=SCHEMA if structured else None))
    return out


async def _raw(url: str, model: str, requests: list[GenerationRequest], slots: int) -> int:
    """llama-server used raw: the same payloads, N in flight, no retries, no parsing."""
    import httpx

    semaphore = asyncio.Semaphore(slots)
    async with httpx.AsyncClient(timeout=httpx.Timeout(3600)) as client:
        async def one(request: GenerationRequest) -> int:
            s = request.sampling
            payload = {"model": model, "messages": list(request.messages), "temperature": s.temperature,
                       "top_p": s.top_p, "max_tokens": s.max_tokens, "seed": s.seed}
            if request.json_schema is not None:
                payload["response_format"] = {"type": "json_object",
                                              "schema": grammar_schema(request.json_schema, s.max_tokens)}
            async with semaphore:
                response = await client.post(f"{url}/chat/completions", json=payload)
            response.raise_for_status()
            return int(response.json()["usage"]["completion_tokens"])

        return sum(await asyncio.gather(*(one(r) for r in requests)))


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system, every thread) of this process, plus the server child's."""
    own = os.times()
    total = own.user + own.system
    if pid is not None:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def timed(fn, pid: int | None = None) -> tuple[float, float]:
    """(tokens per wall second, tokens per CPU second of this process and the server): the
    second holds still on a shared machine, where the first follows the CPU share we get."""
    started, cpu = time.perf_counter(), cpu_seconds(pid)
    tokens = fn()
    return tokens / (time.perf_counter() - started), tokens / max(cpu_seconds(pid) - cpu, 1e-9)


def factory_pass(backend, requests) -> int:
    results = backend.generate(requests)
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise SystemExit(f"{len(failed)} requests failed: {failed[0]}")
    return sum(r.completion_tokens for r in results)


def baseline(model: str, requests: list[GenerationRequest], threads: int, n_ctx: int) -> tuple[float, float]:
    from synth.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(model=model, n_ctx=n_ctx, n_threads=threads)
    backend.load()
    backend.generate(requests[:1])  # warm-up
    rates = timed(lambda: factory_pass(backend, requests))
    backend.close()
    return rates


def fresh(requests: list[GenerationRequest], tag: str) -> list[GenerationRequest]:
    """The same requests with `tag` opening the system message: no slot or prompt cache of the
    server holds their prefix. Every pass reads its prompts cold, as the first did; without
    it a pass that came after found some prompts cached, depending on which slot each landed
    on, and the sides drifted apart (stop 28's 2- and 4-slot passes)."""
    from dataclasses import replace

    def tagged(r: GenerationRequest) -> GenerationRequest:
        system, *rest = r.messages
        return replace(r, key=f"{tag}/{r.key}", messages=({**system, "content": f"[{tag}] {system['content']}"}, *rest))

    return [tagged(r) for r in requests]


def measure(model: str, slots: int, requests: list[GenerationRequest], order: str, threads: int,
            n_ctx: int) -> dict:
    from synth.backends.llama_server import LlamaServerBackend

    backend = LlamaServerBackend(model=model, n_ctx=n_ctx, n_threads=threads, parallel=slots)
    backend.load()
    try:
        backend.generate(fresh(requests[:slots], "warm-up"))  # the first requests pay the model's first use
        passes: dict[str, list[float]] = {"A": [], "B": []}
        per_cpu: dict[str, list[float]] = {"A": [], "B": []}
        pid = backend.server.pid
        for k, side in enumerate(order):
            cold = fresh(requests, f"pass {k}")  # same lengths on both sides, no prefix cached
            if side == "A":
                rate, cpu_rate = timed(lambda: asyncio.run(_raw(backend.server.url, backend.model, cold, slots)),
                                       pid)
            else:
                rate, cpu_rate = timed(lambda: factory_pass(backend, cold), pid)
            passes[side].append(rate)
            per_cpu[side].append(cpu_rate)
            print(f"  {model} N={slots} {'json' if requests[0].json_schema else 'plain'} {side}: {rate:.1f} tok/s, "
                  f"{cpu_rate:.1f} tok/CPU-s", file=sys.stderr, flush=True)
    finally:
        backend.close()
    return {"raw": statistics.mean(passes["A"]), "factory": statistics.mean(passes["B"]), "passes": passes,
            "raw_cpu": statistics.mean(per_cpu["A"]), "factory_cpu": statistics.mean(per_cpu["B"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="embedded,embedded-1.5b")
    parser.add_argument("--slots", default="1,2,4,8")
    parser.add_argument("--n", type=int, default=16, help="requests a pass (at least the largest slot count)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="default: free_cores() at the start")
    parser.add_argument("--n-ctx", type=int, default=1024, help="context per slot")
    parser.add_argument("--order", default="ABBA", help="A = raw server, B = factory backend")
    parser.add_argument("--modes", default="plain,json")
    args = parser.parse_args()
    from synth.backends.cores import free_cores

    threads = args.threads or free_cores()
    slot_counts = [int(s) for s in args.slots.split(",")]
    print(f"threads {threads}, {args.n} requests a pass, max_tokens {args.max_tokens}, order {args.order}",
          file=sys.stderr)
    rows = []
    for model in args.models.split(","):
        for mode in args.modes.split(","):
            requests = make_requests(args.n, args.max_tokens, mode == "json")
            base = [baseline(model, requests, threads, args.n_ctx)]
            print(f"  {model} {mode} in-process one stream: {base[0][0]:.1f} tok/s, {base[0][1]:.1f} tok/CPU-s",
                  file=sys.stderr, flush=True)
            found = {n: measure(model, n, requests, args.order, threads, args.n_ctx) for n in slot_counts}
            base.append(baseline(model, requests, threads, args.n_ctx))
            print(f"  {model} {mode} in-process one stream: {base[1][0]:.1f} tok/s, {base[1][1]:.1f} tok/CPU-s",
                  file=sys.stderr, flush=True)
            one = (statistics.mean(b[0] for b in base), statistics.mean(b[1] for b in base))
            for n, row in found.items():
                rows.append((model, mode, n, one, row))
    print("\n| model | output | sequences | in-process 1 stream tok/s (tok/CPU-s) | raw llama-server tok/s (tok/CPU-s) |"
          " factory tok/s (tok/CPU-s) | factory x1 stream, wall (CPU) | factory / raw, wall (CPU) |"
          " passes tok/s (A raw, B factory) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for model, mode, n, one, row in rows:
        passes = " ".join(f"{side}{rate:.0f}" for side, rate in _interleave(args.order, row["passes"]))
        print(f"| {model} | {mode} | {n} | {one[0]:.1f} ({one[1]:.1f}) | {row['raw']:.1f} ({row['raw_cpu']:.1f}) | "
              f"{row['factory']:.1f} ({row['factory_cpu']:.1f}) | {row['factory'] / one[0]:.2f} "
              f"({row['factory_cpu'] / one[1]:.2f}) | {row['factory'] / row['raw']:.3f} "
              f"({row['factory_cpu'] / row['raw_cpu']:.3f}) | {passes} |")


def _interleave(order: str, passes: dict[str, list[float]]) -> list[tuple[str, float]]:
    its = {side: iter(values) for side, values in passes.items()}
    return [(side, next(its[side])) for side in order]


if __name__ == "__main__":
    main()
