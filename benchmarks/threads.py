"""llama.cpp threads on a shared machine: one greedy chat request with 2 threads and with 1,
in ABBA order, with the load average beside each (the measurement behind
synth.backends.cores.free_cores).

    python benchmarks/threads.py [--model embedded-1.5b] [--tokens 40]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from synth.backends.embedded import resolve_gguf  # noqa: E402

PROMPT = "Tom has 3 boxes of 4 pens and gives away 5 pens. How many pens are left? Answer briefly."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded-1.5b")
    parser.add_argument("--tokens", type=int, default=40)
    args = parser.parse_args()
    from llama_cpp import Llama

    path = str(resolve_gguf(args.model))
    for threads in (2, 1, 1, 2):
        llm = Llama(model_path=path, n_ctx=1024, n_threads=threads, verbose=False, seed=0)
        started = time.perf_counter()
        out = llm.create_chat_completion(messages=[{"role": "user", "content": PROMPT}], max_tokens=args.tokens,
                                         temperature=0.0)
        wall = time.perf_counter() - started
        print(f"{threads} thread(s): {out['usage']['completion_tokens']} tokens in {wall:.1f} s "
              f"(load average {os.getloadavg()[0]:.1f})", flush=True)
        llm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
