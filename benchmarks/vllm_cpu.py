"""vLLM on the CPU (and the GPU): engine start, batch throughput, the `vllm` backend's
overhead over raw `LLM.chat`, `vllm serve` throughput, memory; and llama.cpp on the same
requests for comparison.

    make bench-vllm                                     # in .venv-vllm: every vLLM part
    .venv-vllm/bin/python benchmarks/vllm_cpu.py --parts start,batch --eager
    .venv/bin/python benchmarks/vllm_cpu.py --parts llamacpp   # in the main environment

Every part uses the same requests: GSM8K questions from recipes/seeds, "solve step by
step", temperature 0.8, one seed per request, `--max-tokens` new tokens. Figures:

- start: seconds from `VLLMBackend.load()` to a ready engine (imports included);
- batch: completion tokens per second of one `generate` call of 32 and of 128 requests;
- overhead: the backend's `generate` against raw `LLM.chat` on the same `--n` requests
  with the same SamplingParams, same engine, after one untimed pass that warms the
  prefix cache, passes in ABBA order (raw, ours, ours, raw) so that a machine that
  speeds up or slows down tilts neither side; the ratio is ours / raw (target <= 1.02);
- server: `python -m vllm.entrypoints.openai.api_server` on loopback: seconds until it
  answers, then completion tokens per second through the `openai` backend at 16 and 32
  concurrent requests;
- memory: resident memory of this process and its children (vLLM runs its engine in
  child processes), and of the server's process tree.

Each figure prints as one JSON line, then a summary. The machine's load average goes
with them: on a shared 2-core machine it moves every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # CPU build only; the GPU build ignores it

from synth.backends.base import GenerationRequest, Sampling  # noqa: E402

SEEDS = ROOT / "recipes" / "seeds" / "gsm8k_120.jsonl"
FIGURES: list[dict] = []


def emit(part: str, **values) -> None:
    record = {"part": part, **values, "load_avg_1m": round(os.getloadavg()[0], 2)}
    FIGURES.append(record)
    print(json.dumps(record), flush=True)


def make_requests(n: int, max_tokens: int, tag: str = "q") -> list[GenerationRequest]:
    questions = [json.loads(line)["question"] for line in SEEDS.read_text().splitlines() if line.strip()]
    return [
        GenerationRequest(
            key=f"{tag}{i}",
            messages=({"role": "system", "content": "You solve math word problems step by step."},
                      {"role": "user", "content": questions[i % len(questions)]}),
            sampling=Sampling(temperature=0.8, top_p=0.95, max_tokens=max_tokens, seed=1000 + i),
        )
        for i in range(n)
    ]


def tree_rss_mb(pid: int | None = None) -> float | None:
    try:
        import psutil  # vLLM's environment has it; the main one may not
    except ImportError:
        return None

    root = psutil.Process(pid or os.getpid())
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return round(total / 2**20, 1)


def completion_tokens(results) -> int:
    bad = [r for r in results if not r.ok]
    if bad:
        raise SystemExit(f"{len(bad)} requests failed, e.g. {bad[0].error}")
    return sum(r.completion_tokens for r in results)


# --- in-process vLLM ------------------------------------------------------------------


def load_backend(args):
    from synth.backends.vllm import VLLMBackend

    kwargs = {"enforce_eager": True} if args.eager else {}
    backend = VLLMBackend(model=args.model, max_model_len=args.max_model_len, dtype=args.dtype, **kwargs)
    started = time.perf_counter()
    backend.load()
    emit("start", seconds=round(time.perf_counter() - started, 1), eager=args.eager, rss_mb=tree_rss_mb())
    warm = time.perf_counter()
    completion_tokens(backend.generate(make_requests(4, args.max_tokens, "warm")))
    emit("first_call", seconds=round(time.perf_counter() - warm, 1), eager=args.eager)
    return backend


def part_batch(backend, args) -> None:
    for n in (32, 128):
        requests = make_requests(n, args.max_tokens, f"b{n}-")
        started = time.perf_counter()
        tokens = completion_tokens(backend.generate(requests))
        wall = time.perf_counter() - started
        emit("batch", requests=n, completion_tokens=tokens, seconds=round(wall, 2),
             tokens_per_s=round(tokens / wall, 1), rss_mb=tree_rss_mb())


def part_overhead(backend, args) -> None:
    requests = make_requests(args.n, args.overhead_max_tokens, "o")
    conversations = [[dict(m) for m in r.messages] for r in requests]
    raw_s, ours_s, tokens = [], [], {}

    def raw() -> None:
        params = [backend._params(r) for r in requests]  # built outside the clock: raw gets them free
        started = time.perf_counter()
        outputs = backend._llm.chat(conversations, params, use_tqdm=False)
        raw_s.append(time.perf_counter() - started)
        tokens["raw"] = sum(len(o.outputs[0].token_ids) for o in outputs)

    def ours() -> None:
        started = time.perf_counter()
        results = backend.generate(requests)
        ours_s.append(time.perf_counter() - started)
        tokens["ours"] = completion_tokens(results)

    backend.generate(requests)  # untimed: fills the prefix cache, so that no pass runs cold
    for round_ in range(args.rounds):
        # ABBA order: a machine that speeds up or slows down tilts neither side
        for step in ((raw, ours) if round_ % 2 == 0 else (ours, raw)):
            step()
    emit("overhead", requests=args.n, max_tokens=args.overhead_max_tokens, rounds=args.rounds,
         raw_s=[round(s, 2) for s in raw_s], ours_s=[round(s, 2) for s in ours_s],
         ratio=round(sum(ours_s) / sum(raw_s), 4), tokens=tokens,
         raw_tokens_per_s=round(tokens["raw"] * args.rounds / sum(raw_s), 1))


# --- vllm serve -------------------------------------------------------------------------


def part_server(args) -> None:
    import httpx

    from synth.backends.openai import OpenAIBackend
    from synth.backends.vllm import cpu_server_args, embedded_hf_dir
    from synth.backends.embedded import EMBEDDED_MODEL_NAME
    from tests.servers import free_port

    model = str(embedded_hf_dir()) if args.model == "embedded" else args.model
    name = EMBEDDED_MODEL_NAME if args.model == "embedded" else args.model
    port = free_port()
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
               "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port),
               "--max-model-len", str(args.max_model_len), *cpu_server_args()]
    command += ["--enforce-eager"] if args.eager else []
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"vllm-bench-server-{port}.log", "w")
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        while True:
            if process.poll() is not None or time.perf_counter() - started > args.server_wait_s:
                raise SystemExit(f"vLLM server did not come up; see {log.name}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        emit("server_start", seconds=round(time.perf_counter() - started, 1), eager=args.eager,
             rss_mb=tree_rss_mb(process.pid))
        OpenAIBackend(url, model=name, concurrency=4).generate(make_requests(4, args.max_tokens, "sw"))
        for concurrency in (16, 32):
            backend = OpenAIBackend(url, model=name, concurrency=concurrency, timeout_s=600, max_retries=0)
            requests = make_requests(128, args.max_tokens, f"s{concurrency}-")
            t0 = time.perf_counter()
            tokens = completion_tokens(backend.generate(requests))
            wall = time.perf_counter() - t0
            emit("server", requests=len(requests), concurrency=concurrency, completion_tokens=tokens,
                 seconds=round(wall, 2), tokens_per_s=round(tokens / wall, 1), rss_mb=tree_rss_mb(process.pid))
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


# --- llama.cpp (main environment) ----------------------------------------------------------


def part_llamacpp(args) -> None:
    from synth.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend()
    started = time.perf_counter()
    backend.load()
    emit("llamacpp_start", seconds=round(time.perf_counter() - started, 1), rss_mb=tree_rss_mb())
    requests = make_requests(16, args.max_tokens, "l")
    t0 = time.perf_counter()
    tokens = completion_tokens(backend.generate(requests))
    wall = time.perf_counter() - t0
    emit("llamacpp", requests=len(requests), completion_tokens=tokens, seconds=round(wall, 2),
         tokens_per_s=round(tokens / wall, 1), rss_mb=tree_rss_mb())
    backend.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="vLLM CPU/GPU figures")
    parser.add_argument("--parts", default="start,batch,overhead,server",
                        help="comma-separated: start, batch, overhead, server, llamacpp")
    parser.add_argument("--model", default="embedded", help="'embedded' or an HF model id/directory")
    parser.add_argument("--eager", action="store_true", help="enforce_eager: no torch.compile (faster start)")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--dtype", default="auto", help="auto (float32 on a CPU without AVX-512 BF16), bfloat16, float32")
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens per request (batch, server)")
    parser.add_argument("--n", type=int, default=500, help="requests in the overhead comparison")
    parser.add_argument("--overhead-max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved raw/ours passes")
    parser.add_argument("--server-wait-s", type=float, default=900)
    parser.add_argument("--json-out", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    unknown = parts - {"start", "batch", "overhead", "server", "llamacpp"}
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")

    try:
        import torch

        bf16 = bool(torch.cpu._is_avx512_bf16_supported())
    except Exception:  # the main environment has no torch (the llamacpp part)
        bf16 = None
    emit("machine", cpus=os.cpu_count(), python=sys.executable, avx512_bf16=bf16, dtype=args.dtype,
         omp_bind=os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto"))
    if "llamacpp" in parts:
        part_llamacpp(args)
    if parts & {"start", "batch", "overhead"}:
        backend = load_backend(args)
        try:
            if "batch" in parts:
                part_batch(backend, args)
            if "overhead" in parts:
                part_overhead(backend, args)
        finally:
            backend.close()
    if "server" in parts:
        part_server(args)

    print("\nsummary")
    for record in FIGURES:
        shown = {k: v for k, v in record.items() if k not in {"part", "python"}}
        print(f"  {record['part']:<14} {shown}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(FIGURES, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
