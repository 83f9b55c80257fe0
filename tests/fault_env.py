"""Broken environments for tests, made for real: a small filesystem that fills up, a user
who may not write, damaged blocks in a catalog file, an OpenAI-compatible stub that
answers slowly, and `synth` as a child process (so that what a person sees, exit code
and stderr, is what the test reads). Not a test module.

`small_fs` mounts a size-limited tmpfs and unmounts it afterwards; where mounting is not
permitted (not root, no CAP_SYS_ADMIN) the test is skipped with that reason. Root writes
through any mode bits: `synth(..., unprivileged=True)` runs the child as root without
CAP_DAC_OVERRIDE, so a 0444 file or 0555 folder binds it; as anyone else they bind anyway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.http_stub import StubRequest, StubResponse, chat_reply

ROOT = Path(__file__).resolve().parent.parent


def synth_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)
    env.pop("SYNTH_DEBUG", None)
    env.update(extra)
    return env


_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _drop_dac_override() -> None:
    """In the child, before exec: root without the capabilities that let it write through mode
    bits (so a 0444 file or a 0555 folder binds root as it binds anyone)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) refused")


def mode_bits_bind() -> bool:
    """True when the child should drop root's override (running as root); skips where it cannot."""
    if os.geteuid() != 0:
        return False
    probe = subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_drop_dac_override, capture_output=True)
    if probe.returncode != 0:
        pytest.skip("running as root and cannot drop CAP_DAC_OVERRIDE for a child: mode bits would not bind")
    return True


def synth(args: list[str], cwd: Path, env: dict[str, str] | None = None, unprivileged: bool = False,
          timeout: float = 600) -> subprocess.CompletedProcess:
    """`synth ARGS` in a child process; its exit code, stdout and stderr. `unprivileged`: as root
    without CAP_DAC_OVERRIDE (see `mode_bits_bind`)."""
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env or synth_env(),
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_drop_dac_override if unprivileged else None)


def synth_popen(args: list[str], cwd: Path, env: dict[str, str] | None = None, log: Path | None = None,
                ) -> subprocess.Popen:
    """`synth ARGS` started in its own session (a terminal job: Ctrl-C goes to its whole group);
    stdout and stderr to `log`."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env or synth_env(),
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def error_line(proc: subprocess.CompletedProcess, code: int) -> str:
    """The one line a fault ends with: exit `code`, no traceback, the last line `error: ...`."""
    assert proc.returncode == code, f"exit {proc.returncode}, wanted {code}:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr[-3000:]
    return last


# -- a filesystem that fills up -------------------------------------------------------------------

@contextmanager
def catalog_held(catalog: Path, seconds: float = 60) -> Iterator[subprocess.Popen]:
    """Another process holds `catalog` open (DuckDB's one writer per file) for `seconds` or
    until the block ends; it has the file when the block starts."""
    root = Path(__file__).resolve().parent.parent
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[2]);"
         "from storage.catalog.catalog import Catalog; c = Catalog(sys.argv[1]); print('held', flush=True); "
         "time.sleep(float(sys.argv[3]))", str(catalog), str(root), str(seconds)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


@contextmanager
def small_fs(where: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of `size_mb` MiB mounted at `where` for the block; skipped where mounting is refused."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {size_mb} MiB tmpfs here (needs root / CAP_SYS_ADMIN): "
                    f"{mounted.stderr.strip() or mounted.returncode}")
    try:
        yield where
    finally:
        for _ in range(20):  # a child that just exited may still hold a file open for a moment
            if subprocess.run(["umount", str(where)], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        else:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a filler file until the filesystem under `folder` is full; remove it to free the space."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for size in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


# -- a damaged catalog ------------------------------------------------------------------------------

def damage_table(catalog: Path, table: str) -> int:
    """Overwrite bytes inside a data block of `table` (as a disk's bad sector would); returns its offset."""
    import duckdb

    con = duckdb.connect(str(catalog), read_only=True)
    try:
        block_size = con.execute("SELECT block_size FROM pragma_database_size()").fetchall()[0][0]
        block = con.execute(f"SELECT min(block_id) FROM pragma_storage_info('{table}') WHERE block_id >= 0"
                            ).fetchall()[0][0]
    finally:
        con.close()
    assert block is not None, f"table {table} has no data block yet (checkpoint first)"
    offset = 3 * 4096 + block * block_size + 8  # after the three file headers and the block's checksum
    with open(catalog, "r+b") as f:
        f.seek(offset)
        f.write(b"\xde\xad\xbe\xef" * 4096)
    return offset


# -- an OpenAI-compatible stub that writes math questions and answers ------------------------------

def math_answer(request: StubRequest, delay_s: float = 0.0) -> StubResponse:
    """A question or its worked answer: JSON where the request asks for it (`response_format`),
    else the field as free text (what the stages ask for by default), read from the prompt."""
    structured = request.json.get("response_format")
    prompt = str(request.json.get("messages", [{}])[-1].get("content", ""))
    wants_question = ("question" in json.dumps(structured) if structured
                      else "Write only the question" in prompt)
    n = request.index
    fields = ({"question": f"A farmer has {n} hens and buys {n % 7 + 2} more. How many hens now, number {n}?"}
              if wants_question else {"answer": f"Add them up: {n % 97} in all. #### {n % 97}"})
    text = json.dumps(fields) if structured else next(iter(fields.values()))
    return StubResponse(json=chat_reply(text), delay_s=delay_s)


def openai_backend(url: str, **extra) -> dict:
    return {"kind": "openai", "base_url": url + "/v1", "model": "stub", "timeout_s": 5.0, "max_retries": 1,
            "concurrency": 4, "sampling": {"max_tokens": 64, "seed": 1}, **extra}
