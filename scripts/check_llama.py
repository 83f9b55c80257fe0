"""Smoke check of the embedded engine after install: load the embedded model and answer
a chat prompt with both cores, in a child process, so a build that crashes (a native
llama.cpp build with AMX kernels did, with SIGSEGV) fails `make` with a line that says
what to do instead of failing the tests later.

    python scripts/check_llama.py
"""

from __future__ import annotations

import subprocess
import sys

CHILD = """
from llama_cpp import Llama
from synth.backends.embedded import embedded_gguf
llm = Llama(model_path=str(embedded_gguf()), n_ctx=512, n_threads=2, verbose=False)
out = llm.create_chat_completion(messages=[{"role": "user", "content": "Say hello to the factory."}],
                                 max_tokens=4, seed=1)
print(out["usage"]["completion_tokens"])
"""


def main() -> int:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        print(f"check_llama: the embedded engine failed (exit {done.returncode}): {done.stderr.strip()[-400:]}\n"
              "check_llama: rebuild llama-cpp-python portably: rm -rf ~/.cache/synth-factory/wheels .venv && make install",
              file=sys.stderr)
        return 1
    print(f"check_llama: the embedded model answered ({done.stdout.strip()} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
