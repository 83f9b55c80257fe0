"""`synth serve`: the deployments (on-demand and nightly) served to the Prefect UI, against
the local server (started if needed) or `--api-url`."""

from __future__ import annotations

import argparse
import os
import sys

from flows.cli.common import server_options


def add_command(sub) -> None:
    serve = sub.add_parser("serve", help="serve the deployments (on-demand and nightly) to the Prefect UI")
    server_options(serve)
    serve.add_argument("--api-url", default=os.environ.get("PREFECT_API_URL"),
                       help="use this Prefect API instead of the local server (default: $PREFECT_API_URL)")
    serve.add_argument("--limit", type=int, default=1,
                       help="flow runs at a time (default 1: one DuckDB catalog has one writer)")
    serve.add_argument("--pause-schedule", action="store_true", help="register the nightly schedule paused")
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.server import NO_TELEMETRY, ServerError, ensure_server, is_healthy, ui_url

    api = args.api_url
    try:
        if api:
            if not is_healthy(api):
                raise ServerError(f"nothing answers {api}/health: start it (`synth server start`) "
                                  "or drop --api-url / PREFECT_API_URL")
        else:
            api = ensure_server(args.host, args.port, args.timeout, args.state_dir)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # Before prefect is imported: the runner and its flow-run subprocesses read it from the environment.
    os.environ["PREFECT_API_URL"] = api
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")  # killed runs end Crashed (flows/server.py)
    for name, value in NO_TELEMETRY.items():
        os.environ.setdefault(name, value)
    print(f"Prefect UI: {ui_url(api)}  (deployments: {ui_url(api)}/deployments)", flush=True)
    from flows.deployments import serve_deployments

    serve_deployments(api, limit=args.limit, schedule_paused=args.pause_schedule)
    return 0
