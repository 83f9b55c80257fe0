"""`synth server [start|stop|status]`: the local Prefect server and its UI (flows/server.py)."""

from __future__ import annotations

import argparse
import sys

from flows.cli.common import server_options


def add_command(sub) -> None:
    server = sub.add_parser("server", help="start, stop or check the local Prefect server (UI)")
    server.add_argument("action", choices=["start", "stop", "status"], nargs="?", default="start")
    server_options(server)
    server.set_defaults(func=cmd_server)


def cmd_server(args: argparse.Namespace) -> int:
    from flows.server import ServerError, api_url, ensure_server, is_healthy, server_pid, stop_server, ui_url

    api = api_url(args.host, args.port)
    if args.action == "start":
        try:
            api = ensure_server(args.host, args.port, args.timeout, args.state_dir)
        except ServerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"Prefect UI: {ui_url(api)}")
        print(f"API: {api}  (export PREFECT_API_URL={api} so that runs report here)")
        return 0
    if args.action == "stop":
        stopped = stop_server(args.state_dir)
        print("stopped the Prefect server" if stopped else f"no server started from {args.state_dir} is running")
        return 0
    pid = server_pid(args.state_dir)
    if is_healthy(api):
        print(f"up: UI {ui_url(api)}, API {api}" + (f", pid {pid}" if pid else " (started elsewhere)"))
        return 0
    print(f"down: nothing answers {api}/health" + (f" (pid {pid} is still starting)" if pid else ""))
    return 1
