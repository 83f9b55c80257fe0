"""Does niced work beside llama-server slow it down? What `free_cores` should count as busy.

llama.cpp's threads wait for each other at every step, so a core another process holds
stalls them all (synth/backends/cores.py). A `nice -n 19` process yields its core to normal
work, in theory. This measures it: the factory's llama-server backend (8 slots) answers the
same GSM8K requests with 2 threads and with 1, on an idle machine and beside as many niced
busy loops as there are cores, in ABBA order per thread count:

    idle, niced, niced, idle    (2 threads, then 1 thread)

Figures: tokens/s of each pass and the ratio niced/idle. If 2 threads beside niced work keep
most of their idle speed, niced work counts as free; if they fall below 1 thread's, it must
count as busy.

    python benchmarks/contention.py --model embedded-1.5b --n 16 --max-tokens 64
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.batched import make_requests  # noqa: E402
from synth.backends.llama_server import LlamaServerBackend  # noqa: E402


def spinners(n: int) -> list[subprocess.Popen]:
    """n niced busy loops (this benchmark's own children, stopped by PID after the pass)."""
    return [subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def one_pass(backend: LlamaServerBackend, requests, loaded: bool) -> float:
    loops = spinners(os.cpu_count() or 1) if loaded else []
    try:
        time.sleep(1.0 if loaded else 0.0)  # the loops running before the first token
        began = time.perf_counter()
        results = backend.generate(requests)
        wall = time.perf_counter() - began
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    assert all(r.error is None for r in results), [r.error for r in results if r.error]
    return sum(r.completion_tokens for r in results) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded-1.5b")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", default="2,1")
    args = parser.parse_args()
    requests = make_requests(args.n, args.max_tokens, structured=False)
    print("| threads | idle tok/s | beside niced loops tok/s | niced / idle |")
    print("|---:|---:|---:|---:|")
    for threads in (int(t) for t in args.threads.split(",")):
        backend = LlamaServerBackend(model=args.model, n_ctx=1024, n_threads=threads, parallel=8)
        backend.load()
        try:
            backend.generate(requests[:2])  # warm: the model paged in
            idle, niced = [], []
            for loaded in (False, True, True, False):
                (niced if loaded else idle).append(one_pass(backend, requests, loaded))
        finally:
            backend.close()
        a, b = sum(idle) / 2, sum(niced) / 2
        print(f"| {threads} | {a:.1f} | {b:.1f} | {b / a:.2f} |", flush=True)


if __name__ == "__main__":
    main()
