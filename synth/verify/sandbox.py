"""Run untrusted generated Python against its tests in a throwaway subprocess.

Never in-process: each run is `python -I runner.py` in a fresh temporary directory, with

- its own network namespace (`unshare --net`: only a loopback that is down) and PID
  namespace (when its first process ends the kernel kills every process left in it, so a
  fork that escaped the process group dies too) and a private /proc that shows only the
  sandbox's processes; detected once, used when available (root, or user namespaces);
- a prelude that replaces socket creation with an error before the generated code runs,
  in any case: the namespace is the wall, the prelude makes the verdict say why;
- resource limits set by the runner before it reads the generated code (address space =
  `memory_mb`, CPU seconds ~ `timeout_s`, processes, file size, open files, no core
  dumps) and, when started as root, a drop to the `nobody` user with no new privileges;
  where `nobody` cannot read the interpreter (a pyenv under /root), the interpreter's
  prefix is bind-mounted read-only into the scratch directory, inside the sandbox's own
  mount namespace;
- an environment stripped to PATH/LANG/HOME: no tokens or keys from the parent;
- a wall-clock limit (`timeout_s` + 1 s to start), after which the process group is killed;
- stdout/stderr captured and cut to a few KB (head and tail); the verdict comes back on
  a private pipe with a per-run token, so printing "passed" or exiting 0 early is no pass.

Limits are set by the runner, not in a `preexec_fn`: Python documents `preexec_fn` as
unsafe when the parent has threads, and `verify_many` runs sandboxes from threads. Every
limit is in force before the first line of generated code is compiled.

Left out: a seccomp filter and a read-only view of the file system. The generated code
can read what `nobody` may read. Code that deliberately digs the pass token out of the
runner's memory can fake a pass: the sandbox contains harm, it is not an anti-cheat.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from synth.errors import SynthError

NOBODY = 65534
STARTUP_S = 1.0  # wall time allowed on top of timeout_s for the interpreter to start
MAX_OUTPUT_BYTES = 8192  # kept of each of stdout and stderr: the first and last half
MAX_PROCESSES = 64  # RLIMIT_NPROC for the sandbox user: bounds a fork bomb
MAX_FILE_MB = 16
MAX_OPEN_FILES = 256

STATUSES = ("passed", "failed", "timeout", "memory_limit", "network_blocked", "syntax_error", "test_error",
            "crashed", "sandbox_error")


class SandboxUnavailable(SynthError, RuntimeError):
    """The sandbox cannot start processes at all on this machine."""


@dataclass(frozen=True)
class RunResult:
    status: str  # one of STATUSES
    message: str  # one line for a person: the assertion, the exception, the limit hit
    returncode: int | None
    wall_s: float
    stdout: str = ""
    stderr: str = ""
    isolation: str = "none"  # "netns+pidns", "userns+netns+pidns" or "none"

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# The runner is trusted code: it sets the limits, drops privileges, blocks sockets, then
# compiles and runs the generated program and its tests, and reports on a private pipe.
RUNNER = r'''
import json, os, resource, sys

def main():
    result_fd, uid, entry = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    mem, cpu, nproc, fsize, nofile = (int(x) for x in sys.argv[4:9])
    sys.path.extend(p for p in sys.argv[9].split(os.pathsep) if p)
    token = sys.stdin.readline().strip()
    sys.stdin = open(os.devnull)
    with open("solution.py", encoding="utf-8") as fh:
        solution = fh.read()
    with open("test.py", encoding="utf-8") as fh:
        test = fh.read()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    if uid >= 0 and os.getuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    try:  # PR_SET_NO_NEW_PRIVS: set-uid programs cannot give privileges back
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0)
    except Exception:
        pass
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))

    import socket, _socket
    tried = []
    def denied(*args, **kwargs):
        tried.append(1)
        raise PermissionError("network access is blocked in the verifier sandbox")
    for mod in (socket, _socket):
        for name in ("socket", "SocketType", "socketpair", "fromfd", "create_connection",
                     "create_server", "getaddrinfo", "gethostbyname"):
            if hasattr(mod, name):
                setattr(mod, name, denied)

    status, message = "passed", ""
    try:
        code = compile(solution, "solution.py", "exec")
    except (SyntaxError, ValueError) as exc:
        status = "syntax_error"
        message = f"{type(exc).__name__}: {getattr(exc, 'msg', exc)} (line {getattr(exc, 'lineno', '?')})"
    else:
        ns = {"__name__": "solution", "__builtins__": __builtins__}
        stage = "program"
        try:
            exec(code, ns)
            stage = "tests"
            exec(compile(test, "test.py", "exec"), ns)
            if "check" not in ns:
                status, message = "test_error", "the tests define no check(candidate)"
            elif entry not in ns:
                status, message = "failed", f"NameError: the program defines no {entry}()"
            else:
                stage = "check"
                ns["check"](ns[entry])
        except MemoryError:
            status, message = "memory_limit", "MemoryError"
        except AssertionError as exc:
            status, message = "failed", "AssertionError: " + (str(exc) or assertion_line(exc, test))
        except SyntaxError as exc:
            status = "test_error" if stage == "tests" else "failed"
            message = f"SyntaxError in {stage}: {exc.msg} (line {exc.lineno})"
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: the program exited early
            status, message = "failed", f"{type(exc).__name__}: {exc}"[:2000]
        ns = None
    if tried:
        status, message = "network_blocked", "the program tried to open a network connection"
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os.write(result_fd, json.dumps({"token": token, "status": status, "message": message[:2000]}).encode())
    os._exit(0)

def assertion_line(exc, test):
    import traceback
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename == "test.py" and frame.lineno:
            lines = test.splitlines()
            if 0 < frame.lineno <= len(lines):
                return lines[frame.lineno - 1].strip()[:500]
    return "(no message)"

main()
'''


# `sh` is the namespace's first process, so the interpreter is an ordinary process (a
# namespace init ignores signals it has no handler for, e.g. SIGXCPU). With a bind source,
# it first mounts the interpreter's prefix (read-only, in the sandbox's own mount
# namespace) inside the scratch directory, for an interpreter `nobody` could not reach.
_SH_PLAIN = '"$@"; exit $?'
_SH_BIND = 'mount --bind -o ro "$1" "$2" || exit 125; shift 2; "$@"; exit $?'
_MOUNT_FAILED = 125


@dataclass(frozen=True)
class _Isolation:
    name: str  # "netns+pidns", "userns+netns+pidns" or "none"
    prefix: tuple[str, ...] = ()  # unshare ... put in front of everything
    drop_uid: int = -1  # the runner switches to this user; -1 keeps the caller's user
    bind_src: str | None = None  # interpreter prefix to mount inside the scratch directory
    python_rel: str = ""  # the interpreter below bind_src
    extra_paths: tuple[str, ...] = ()  # site-packages of the caller's virtual environment

    def command(self, tmp: str, args: list[str]) -> list[str]:
        if self.bind_src:
            python = os.path.join(tmp, "prefix", self.python_rel)
            return [*self.prefix, "/bin/sh", "-c", _SH_BIND, "sh", self.bind_src, os.path.join(tmp, "prefix"),
                    python, *args]
        if self.prefix:
            return [*self.prefix, "/bin/sh", "-c", _SH_PLAIN, "sh", sys.executable, *args]
        return [sys.executable, *args]


_PROBE = ("import os, sys\nif os.getuid() == 0:\n    os.setgroups([]); os.setgid({uid}); os.setuid({uid})\n"
          "import socket, decimal, json, collections\nprint('ok')")


def _probe(iso: _Isolation) -> bool:
    with tempfile.TemporaryDirectory(prefix="synth-verify-probe-") as tmp:
        os.mkdir(os.path.join(tmp, "prefix"))
        os.chmod(tmp, 0o755)
        cmd = iso.command(tmp, ["-I", "-c", _PROBE.format(uid=iso.drop_uid if iso.drop_uid >= 0 else 0)])
        try:
            probe = subprocess.run(cmd, cwd=tmp, capture_output=True, timeout=20, env={"PATH": os.defpath})
        except (OSError, subprocess.TimeoutExpired):
            return False
        return probe.returncode == 0 and probe.stdout.strip() == b"ok"


@functools.lru_cache(maxsize=1)
def isolation() -> _Isolation:
    """How sandboxes start on this machine; probed once per process, strongest first:
    namespaces as root with a drop to `nobody` (the interpreter run in place, else its prefix
    bind-mounted where `nobody` can read it), namespaces through a user namespace, nothing."""
    import site

    unshare = shutil.which("unshare")
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    candidates: list[_Isolation] = []
    if unshare:
        ns = (unshare, "--net", "--pid", "--fork", "--kill-child", "--mount-proc")
        if root:
            candidates.append(_Isolation("netns+pidns", ns, NOBODY))
            exe = os.path.realpath(sys.executable)
            base = os.path.realpath(sys.base_prefix)
            if exe.startswith(base + os.sep):
                venv = tuple(p for p in site.getsitepackages() if not os.path.realpath(p).startswith(base + os.sep))
                candidates.append(_Isolation("netns+pidns", ns, NOBODY, base, os.path.relpath(exe, base), venv))
        candidates.append(_Isolation("userns+netns+pidns", (unshare, "--user", "--map-root-user", *ns[1:])))
    for candidate in candidates:
        if _probe(candidate):
            return candidate
    # no namespaces: still a subprocess with limits, and `nobody` when that can run Python
    plain = _Isolation("none", (), NOBODY if root else -1)
    return plain if not root or _probe(plain) else _Isolation("none")


class _Capture(threading.Thread):
    """Reads a pipe to its end, keeping the first and last `limit // 2` bytes."""

    def __init__(self, stream, limit: int) -> None:
        super().__init__(daemon=True)
        self.stream, self.half = stream, max(limit // 2, 1)
        self.head, self.tail, self.total = bytearray(), bytearray(), 0

    def run(self) -> None:
        try:
            while chunk := self.stream.read1(65536):
                self.total += len(chunk)
                room = self.half - len(self.head)
                if room > 0:
                    self.head += chunk[:room]
                    chunk = chunk[room:]
                if chunk:
                    self.tail = (self.tail + chunk)[-self.half:]
        except (OSError, ValueError):
            pass

    def text(self) -> str:
        dropped = self.total - len(self.head) - len(self.tail)
        middle = f"\n...[{dropped} bytes cut]...\n" if dropped > 0 else ""
        return (bytes(self.head).decode("utf-8", "replace") + middle + bytes(self.tail).decode("utf-8", "replace"))


def _own_processes() -> int:
    uid, count = os.getuid(), 0
    try:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    count += entry.stat().st_uid == uid
                except OSError:
                    pass
    except OSError:
        return 4096  # no /proc to count in: a loose bound
    return count


def _exited(proc: subprocess.Popen) -> bool:
    """True once the child has exited. Where waitid exists (Linux) the child stays a zombie
    until `proc.wait()`, so its pid, which is the group id we kill, cannot be reused."""
    if not hasattr(os, "waitid"):
        return proc.poll() is not None
    info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return info is not None and info.si_pid == proc.pid


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_check(program: str, test: str, entry_point: str, *, timeout_s: float = 5.0, memory_mb: int = 256,
              max_output_bytes: int = MAX_OUTPUT_BYTES, max_processes: int = MAX_PROCESSES) -> RunResult:
    """Run `program`, then `test` (which defines `check(candidate)`), then `check(entry_point)`."""
    if not entry_point.isidentifier():
        return RunResult("test_error", f"entry point {entry_point[:80]!r} is not a Python name", None, 0.0)
    iso = isolation()
    token = secrets.token_hex(16)
    cpu = max(1, int(timeout_s + 0.999))
    # RLIMIT_NPROC counts every process of the user: as `nobody` that is the sandboxes alone,
    # as an ordinary user it must leave room for the processes the user already has
    nproc = max_processes if iso.drop_uid >= 0 else _own_processes() + max_processes
    limits = [memory_mb * 2**20, cpu, nproc, MAX_FILE_MB * 2**20, MAX_OPEN_FILES]
    with tempfile.TemporaryDirectory(prefix="synth-verify-") as tmp:
        for name, text in (("runner.py", RUNNER), ("solution.py", program), ("test.py", test)):
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(os.path.join(tmp, name), 0o644)
        os.mkdir(os.path.join(tmp, "prefix"), 0o755)
        if iso.drop_uid >= 0:
            os.chown(tmp, iso.drop_uid, iso.drop_uid)  # its own scratch space, nothing else
        os.chmod(tmp, 0o755)
        result_r, result_w = os.pipe()
        cmd = iso.command(tmp, ["-I", "runner.py", str(result_w), str(iso.drop_uid), entry_point,
                                *(str(x) for x in limits), os.pathsep.join(iso.extra_paths)])
        env = {"PATH": os.defpath, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": tmp, "TMPDIR": tmp}
        start = time.monotonic()
        try:
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, pass_fds=(result_w,), start_new_session=True)
        except OSError as exc:
            os.close(result_r)
            os.close(result_w)
            raise SandboxUnavailable(f"the code verifier's sandbox cannot start {cmd[0]} ({exc}): check that this "
                                     "machine can start processes (free memory, `ulimit -u`) and rerun") from exc
        os.close(result_w)
        captures = [_Capture(proc.stdout, max_output_bytes), _Capture(proc.stderr, max_output_bytes),
                    _Capture(os.fdopen(result_r, "rb"), 65536)]
        for capture in captures:
            capture.start()
        try:
            proc.stdin.write((token + "\n").encode())
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        deadline = start + timeout_s + STARTUP_S
        timed_out, pause = False, 0.002
        while not _exited(proc):
            if time.monotonic() >= deadline:
                timed_out = True
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        _kill_group(proc.pid)  # stragglers a finished program left behind, or the whole run on timeout
        returncode = proc.wait()
        wall = time.monotonic() - start
        for capture in captures:
            capture.join(timeout=5)
    stdout, stderr, report = captures[0].text(), captures[1].text(), captures[2].text()
    common = dict(returncode=returncode, wall_s=round(wall, 3), stdout=stdout, stderr=stderr, isolation=iso.name)
    if timed_out:
        return RunResult("timeout", f"ran past the {timeout_s:g} s limit and was killed", **common)
    verdict = _parse_report(report, token)
    if verdict is not None:
        return RunResult(verdict[0], verdict[1], **common)
    return RunResult(*_classify_crash(returncode, stderr), **common)


def _parse_report(report: str, token: str) -> tuple[str, str] | None:
    for line in report.splitlines()[::-1] or [report]:
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("token") == token and data.get("status") in STATUSES:
            return str(data["status"]), str(data.get("message", ""))
    return None


def _classify_crash(returncode: int, stderr: str) -> tuple[str, str]:
    """No report from the runner: the program took the interpreter down, or exited early."""
    if returncode == _MOUNT_FAILED:
        return "sandbox_error", "could not mount the interpreter inside the sandbox"
    sig = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and "MemoryError" not in stderr):
        return "timeout", f"used up its CPU time limit (signal {signal.Signals(sig).name})"
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr or "out of memory" in stderr.lower():
        return "memory_limit", "ran out of its memory limit"
    if sig:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return "crashed", f"killed by signal {name} before the tests finished"
    return "crashed", f"exited with code {returncode} before the tests finished"
