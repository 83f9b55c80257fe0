"""The `synth` command line: one module per command, listed in `COMMANDS`.

Bad input (a broken recipe, missing seeds, a malformed tree file) exits with code 2
and a message that names the field; it is checked before anything is written. A broken
environment (a damaged or busy catalog, a full disk, a server that does not answer)
exits with code 1 and one line; Ctrl-C / SIGTERM stop a run after its chunk in flight
(130 / 143). flows/errors.py maps every known fault to its line and code; `--debug` or
`SYNTH_DEBUG=1` adds the traceback.

Adding a command is one module and one line: `flows/cli/<name>.py` with
`add_command(sub)` (it adds its subparser and sets `func`, which returns the exit code),
and its name in `COMMANDS`. What commands share (finding the catalog, `fail`) is in
`flows/cli/common.py`; a command imports nothing from another command.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from flows.cli.common import DEFAULT_CATALOG, fail, find_catalog

__all__ = ["COMMANDS", "DEFAULT_CATALOG", "PREFECT_DEFAULTS", "build_parser", "fail", "find_catalog", "main"]

# In `synth --help` order: a module of this package by name, or "package.module:function" for a
# command that lives elsewhere and registers itself with that function.
COMMANDS = [
    "run",
    "plan",
    "report",
    "tree",
    "export",
    "stats",
    "catalog",
    "server",
    "serve",
    "eval",
    "probe",
]


def register(sub, entry: str) -> None:
    """Add the command `entry` names (see COMMANDS) to the subparsers `sub`."""
    module, _, function = entry.partition(":")
    if "." not in module:
        module = f"{__name__}.{module}"
    getattr(importlib.import_module(module), function or "add_command")(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synth", description="The synthetic data factory.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (anywhere on the line; or SYNTH_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    for entry in COMMANDS:
        register(sub, entry)
    return parser


# Set before prefect reads its settings: no network for telemetry here, and a busy
# 2-core machine can take longer than Prefect's default 20 s to start its ephemeral API.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    # heartbeats let the server mark a killed run Crashed (flows/server.py adds the automation)
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
}


def main(argv: list[str] | None = None) -> int:
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    from flows.errors import debug_enabled, explain

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted after the command too: `synth run r.yaml --debug`
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    try:
        return args.func(args)
    except (SystemExit, GeneratorExit):
        raise
    except BrokenPipeError:  # `synth stats | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except BaseException as exc:
        explained = explain(exc, catalog=getattr(args, "catalog_path", None) or getattr(args, "catalog", None),
                            out=getattr(args, "out", None))
        if explained is None:
            raise  # not a known fault: a bug, whose traceback is what a report needs
        code, message = explained
        if debug_enabled(args.debug):
            import traceback

            traceback.print_exception(exc)
        return fail(message, code)
