"""The code verifier and its sandbox, run for real: HumanEval rows, and programs that
loop, allocate, fork, reach for the network, the parent's secrets or the file system."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from synth.verify import make_verifier
from synth.verify.code import CodeContext, CodeVerifier, unfence
from synth.verify.sandbox import MAX_PROCESSES, NOBODY, isolation, run_check

ROOT = Path(__file__).resolve().parent.parent
HUMANEVAL = ROOT / "recipes" / "seeds" / "humaneval_40.jsonl"
ROWS = [json.loads(line) for line in HUMANEVAL.read_text().splitlines()]
ROW0 = ROWS[0]  # has_close_elements(numbers, threshold)
NAMESPACES = isolation().name != "none"
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def sample(row: dict, solution: str) -> dict:
    return {"prompt": row["prompt"], "solution": solution, "test": row["test"], "entry_point": row["entry_point"]}


def ctx(timeout_s: float = 5.0, memory_mb: int = 256, **kw) -> CodeContext:
    return CodeContext(answer_field="solution", timeout_s=timeout_s, memory_mb=memory_mb, **kw)


def check_row0(body: str, timeout_s: float = 3.0, memory_mb: int = 256):
    return CodeVerifier().verify(sample(ROW0, body), ctx(timeout_s, memory_mb))


def nobody_processes() -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == NOBODY:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


# --- HumanEval: right and wrong solutions -----------------------------------------------

def test_every_canonical_solution_passes_in_a_parallel_batch():
    items = [(sample(row, row["canonical_solution"]), ctx()) for row in ROWS]
    start = time.monotonic()
    verdicts = make_verifier("code").verify_many(items)
    elapsed = time.monotonic() - start
    assert len(verdicts) == 40
    assert [v.reason for v in verdicts if not v.ok] == []
    assert all(v.detail["status"] == "passed" for v in verdicts)
    assert elapsed < 60  # about 4 s on 2 cores


def test_wrong_solutions_fail_with_the_failing_assertion():
    items = [(sample(row, "    return None\n"), ctx()) for row in ROWS[:10]]
    verdicts = CodeVerifier().verify_many(items)
    assert all(not v.ok for v in verdicts)
    kinds = {v.kind for v in verdicts}
    assert kinds <= {"failed"}, [v.reason for v in verdicts]
    first = verdicts[0]
    assert first.reason == ("failed: AssertionError: assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) "
                            "== True")


def test_an_off_by_one_solution_fails():
    wrong = ROW0["canonical_solution"].replace("distance < threshold", "distance > threshold")
    verdict = check_row0(wrong)
    assert not verdict.ok and verdict.kind == "failed"


def test_a_fenced_full_function_from_a_chat_model_passes():
    full = ROW0["prompt"] + ROW0["canonical_solution"]
    verdict = CodeVerifier().verify(sample(ROW0, f"Here you go:\n```python\n{full}```\nDone."), ctx())
    assert verdict.ok, verdict.reason
    assert unfence("no fence") == "no fence"


def test_tests_from_the_seed_when_the_sample_has_none():
    fields = {"prompt": ROW0["prompt"], "solution": ROW0["canonical_solution"]}
    seeded = ctx(test=ROW0["test"], entry_point=ROW0["entry_point"])
    assert CodeVerifier().verify(fields, seeded).ok
    missing = CodeVerifier().verify(fields, ctx())
    assert missing.kind == "no_tests"


def test_syntax_error_is_its_own_verdict():
    verdict = check_row0("    return (\n")
    assert verdict.kind == "syntax_error" and "never closed" in verdict.reason


def test_an_exception_and_an_early_exit_fail():
    assert check_row0("    raise ValueError('nope')\n").reason == "failed: ValueError: nope"
    assert check_row0("    import sys\n    sys.exit(0)\n").reason == "failed: SystemExit: 0"
    # leaving without a word must not read as a pass
    exited = check_row0("    import os\n    os._exit(0)\n")
    assert not exited.ok and exited.kind == "crashed"


# --- limits ----------------------------------------------------------------------------------

def test_an_endless_loop_times_out_quickly():
    start = time.monotonic()
    verdict = check_row0("    while True:\n        pass\n", timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert verdict.kind == "timeout", verdict.reason
    assert elapsed < 4


def test_an_endless_sleep_hits_the_wall_clock_limit():
    start = time.monotonic()
    verdict = check_row0("    import time\n    time.sleep(60)\n", timeout_s=1.0)
    assert verdict.kind == "timeout" and "killed" in verdict.reason
    assert time.monotonic() - start < 4


def test_unbounded_allocation_hits_the_memory_limit():
    start = time.monotonic()
    verdict = check_row0("    hoard = []\n    while True:\n        hoard.append(bytearray(10**6))\n",
                         timeout_s=5.0, memory_mb=128)
    assert verdict.kind == "memory_limit", verdict.reason
    assert time.monotonic() - start < 5
    one_shot = check_row0("    return bytearray(2 * 1024**3)\n", memory_mb=128)
    assert one_shot.kind == "memory_limit"


@pytest.mark.skipif(not (AS_ROOT and NAMESPACES), reason="the process cap is per user: needs root to run as nobody")
def test_forking_is_capped_and_every_child_is_gone_afterwards():
    before = set(nobody_processes())
    body = ("    import os, time\n    n = 0\n    while True:\n        try:\n            pid = os.fork()\n"
            "        except OSError:\n            break\n        if pid == 0:\n            time.sleep(60)\n"
            "            os._exit(0)\n        n += 1\n    print('forked', n)\n    return False\n")
    verdict = check_row0(body, timeout_s=3.0)
    forked = int(verdict.detail["stdout"].split("forked")[1].split()[0])
    assert 0 < forked < MAX_PROCESSES
    assert verdict.kind == "failed"  # ran to the end with the cap in force
    time.sleep(0.2)
    assert set(nobody_processes()) - before == set()  # the sleeping children died with the sandbox


def test_a_fork_bomb_is_stopped_by_the_time_limit_and_cleaned_up():
    before = set(nobody_processes())
    body = ("    import os\n    while True:\n        try:\n            os.fork()\n"
            "        except OSError:\n            pass\n")
    start = time.monotonic()
    verdict = check_row0(body, timeout_s=1.0)
    assert not verdict.ok and verdict.kind in {"timeout", "crashed"}, verdict.reason
    assert time.monotonic() - start < 6
    deadline = time.monotonic() + 3
    while set(nobody_processes()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(nobody_processes()) - before == set()


def test_output_is_captured_and_cut():
    verdict = check_row0("    print('x' * 1_000_000)\n    print('THE END')\n    return None\n")
    out = verdict.detail["stdout"]
    assert len(out) < 10_000 and "bytes cut" in out and "THE END" in out and out.startswith("xxx")


# --- network, secrets, file system ----------------------------------------------------------

@pytest.fixture
def listener():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.5)
    yield server
    server.close()


def assert_no_connection(server: socket.socket) -> None:
    with pytest.raises(socket.timeout):
        conn, _ = server.accept()
        conn.close()


def test_network_use_is_blocked_and_reported(listener):
    port = listener.getsockname()[1]
    body = f"    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    return True\n"
    verdict = check_row0(body)
    assert verdict.kind == "network_blocked", verdict.reason
    assert_no_connection(listener)


def test_network_blocked_even_when_the_code_catches_the_error(listener):
    port = listener.getsockname()[1]
    body = (f"    import socket\n    try:\n        socket.socket().connect(('127.0.0.1', {port}))\n"
            "    except OSError:\n        pass\n    return True\n")
    assert check_row0(body).kind == "network_blocked"
    assert_no_connection(listener)


@pytest.mark.skipif(not NAMESPACES, reason="needs `unshare` (root or user namespaces) for a network namespace")
def test_a_raw_socket_through_ctypes_still_cannot_reach_the_host(listener):
    # bypasses the socket prelude: only the network namespace stands in the way
    port = listener.getsockname()[1]
    body = ("    import ctypes, struct\n    libc = ctypes.CDLL(None, use_errno=True)\n"
            "    fd = libc.socket(2, 1, 0)\n"
            f"    addr = struct.pack('=H', 2) + struct.pack('!H', {port}) + bytes([127, 0, 0, 1]) + bytes(8)\n"
            "    rc = libc.connect(fd, ctypes.c_char_p(addr), 16)\n"
            "    print('connect', rc, ctypes.get_errno())\n    return rc == 0\n")
    test = "def check(candidate):\n    assert candidate() is False\n"
    verdict = CodeVerifier().verify({"solution": "def f():\n" + body, "test": test, "entry_point": "f"}, ctx())
    assert verdict.ok, (verdict.reason, verdict.detail["stdout"], verdict.detail["stderr"])
    assert "connect -1" in verdict.detail["stdout"]
    assert_no_connection(listener)


def test_parent_secrets_are_not_passed_through(monkeypatch):
    secret = "hf_THIS_MUST_NOT_LEAK_1234567890"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    body = (
        "def f():\n    import os, glob\n"
        "    found = [k for k in ('HF_TOKEN', 'OPENAI_API_KEY') if k in os.environ]\n"
        "    for path in glob.glob('/proc/*/environ'):\n"
        "        try:\n"
        "            if b'THIS_MUST_NOT_LEAK' in open(path, 'rb').read():\n"
        "                found.append(path)\n"
        "        except OSError:\n"
        "            pass\n"
        "    return found\n")
    test = "def check(candidate):\n    found = candidate()\n    assert found == [], found\n"
    verdict = CodeVerifier().verify({"solution": body, "test": test, "entry_point": "f"}, ctx())
    assert verdict.ok, verdict.reason
    assert secret not in json.dumps(verdict.detail)


@pytest.mark.skipif(not (AS_ROOT and NAMESPACES), reason="runs as nobody only when started as root")
def test_runs_as_nobody_and_cannot_write_outside_its_scratch_directory():
    targets = [ROOT / "tests" / f"_sandbox_probe_{os.getpid()}.txt", Path(f"/etc/_sandbox_probe_{os.getpid()}")]
    body = (
        "def f():\n    import os\n    wrote = []\n"
        f"    for path in ({str(targets[0])!r}, {str(targets[1])!r}, 'scratch.txt'):\n"
        "        try:\n            open(path, 'w').write('x')\n            wrote.append(path)\n"
        "        except OSError:\n            pass\n"
        "    return os.getuid(), wrote\n")
    test = "def check(candidate):\n    uid, wrote = candidate()\n    assert uid == 65534, uid\n" \
           "    assert wrote == ['scratch.txt'], wrote\n"
    try:
        verdict = CodeVerifier().verify({"solution": body, "test": test, "entry_point": "f"}, ctx())
        assert verdict.ok, verdict.reason
        assert not any(t.exists() for t in targets)
    finally:
        for t in targets:
            t.unlink(missing_ok=True)


def test_isolation_is_the_strongest_this_machine_allows():
    iso = isolation()
    if AS_ROOT and shutil.which("unshare"):
        # root with unshare: CI and the dev box must never fall back silently
        assert iso.name == "netns+pidns" and iso.drop_uid == NOBODY
    assert run_check("def f():\n    return 1\n", "def check(c):\n    assert c() == 1\n", "f").isolation == iso.name


def test_tests_without_check_and_a_missing_function_are_told_apart():
    no_check = run_check("def f():\n    return 1\n", "def verify(c):\n    pass\n", "f")
    assert (no_check.status, no_check.message) == ("test_error", "the tests define no check(candidate)")
    no_func = run_check("def g():\n    return 1\n", "def check(c):\n    pass\n", "f")
    assert (no_func.status, no_func.message) == ("failed", "NameError: the program defines no f()")


def test_an_entry_point_that_is_not_a_name_is_refused_before_running():
    result = run_check("x = 1\n", "def check(c):\n    pass\n", "f; import os")
    assert result.status == "test_error" and result.returncode is None
