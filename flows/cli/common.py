"""What the `synth` commands share: finding the catalog, printing an error, opening a
catalog that may not exist, and the Prefect server's options.

A command module imports from here, never from another command or from `flows.cli`
itself (tests/test_architecture.py holds this), so that the commands stay side by side.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from synth.errors import EXIT_BAD_INPUT

DEFAULT_CATALOG = "data/catalog.duckdb"
CATALOG_HELP = "catalog (default: data/catalog.duckdb, or the one catalog under data/)"


def find_catalog(given: str | None) -> str:
    """--catalog, else $SYNTH_CATALOG, else data/catalog.duckdb, else the one catalog under
    data/ (what `make demo` made); several there: the caller is asked to choose."""
    if given:
        return given
    if os.environ.get("SYNTH_CATALOG"):
        return os.environ["SYNTH_CATALOG"]
    if Path(DEFAULT_CATALOG).exists():
        return DEFAULT_CATALOG
    found = sorted(str(p) for p in Path("data").glob("*.duckdb")) if Path("data").is_dir() else []
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        from storage.catalog.catalog import CatalogError

        raise CatalogError(f"several catalogs under data/ ({', '.join(found)}): pass --catalog PATH "
                           "or set SYNTH_CATALOG")
    return DEFAULT_CATALOG


def fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    """Print `error: message` to stderr; the exit code to return (bad input unless said)."""
    print(f"error: {message}", file=sys.stderr)
    return code


def open_if_exists(path):
    """The catalog at `path` read-only, or None where there is none yet."""
    from storage.catalog.catalog import Catalog

    return Catalog(path, read_only=True) if Path(path).exists() else None


def server_options(parser: argparse.ArgumentParser) -> None:
    """--host, --port, --timeout, --state-dir: where the local Prefect server listens and keeps its state."""
    from flows.server import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_STATE_DIR, DEFAULT_TIMEOUT_S

    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds to wait for the server to answer")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                        help="folder of the server's pid file, log and SQLite database (default data/)")
