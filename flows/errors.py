"""The one place that turns an exception into the line the command line prints and its exit code.

    0    done
    1    a failed run or a broken environment: the catalog busy, damaged, not a catalog, not
         writable or on a full disk; an export folder that cannot be written; the backend's
         server, the Ray cluster or the Prefect API not answering; a lost text segment; a
         model or the embedding model not installed; the code verifier's sandbox unable to
         start a process; a backend that broke its contract (a bug in that backend)
    2    bad input: the recipe, its seeds, templates or tree file (the message names the field)
    130  stopped by Ctrl-C (SIGINT) or cancelled from the Prefect UI; 143 stopped by SIGTERM

Every error of ours derives from `synth.errors.SynthError`, which carries its exit code
and its line: a new error class needs no edit here. Faults raised by others (DuckDB, the
file system, the Prefect API's transport) are worded here. Every line names the file or
service, says what is wrong and what to do; the traceback is shown only with `--debug` or
`SYNTH_DEBUG=1`. An exception this module does not know is a bug: it is not turned into a
line (its traceback is what a bug report needs).

`quiet_prefect_console()` keeps Prefect's console log lines but drops the tracebacks it
prints under them (the run's page in the UI still gets them): the command's own last
line says what went wrong.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from synth.errors import EXIT_FAILED, SynthError

EXIT_SIGINT = 130
EXIT_SIGTERM = 143


def debug_enabled(flag: bool = False) -> bool:
    return flag or os.environ.get("SYNTH_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}


def explain(exc: BaseException, catalog: str | Path | None = None,
            out: str | Path | None = None) -> tuple[int, str] | None:
    """(exit code, one line) for `exc`, or None when it is not a known fault. `catalog` and
    `out` are what the command was working on, to name them when the error does not."""
    import duckdb
    import httpx

    if isinstance(exc, KeyboardInterrupt):
        return EXIT_SIGINT, ("stopped by Ctrl-C (SIGINT); what was committed is kept: run the same command "
                             "again to resume")
    if type(exc).__name__ == "TerminationSignal":  # prefect.exceptions, raised by its SIGTERM bridge
        return EXIT_SIGTERM, "stopped by SIGTERM; what was committed is kept: run the same command again to resume"
    if isinstance(exc, SynthError):  # every error of ours knows its code and its line
        return exc.exit_code, exc.line()
    from storage.catalog import faults

    if isinstance(exc, duckdb.Error):
        message = faults.describe(exc, catalog, "the catalog")
        return (EXIT_FAILED, message) if message else None
    if isinstance(exc, OSError):
        message = faults.describe(exc, None if getattr(exc, "filename", None) else out)
        return (EXIT_FAILED, message) if message else None
    if isinstance(exc, httpx.TransportError):
        api = os.environ.get("PREFECT_API_URL") or "the temporary Prefect server"
        return EXIT_FAILED, (f"lost the Prefect API at {api} ({type(exc).__name__}: {exc}); what was committed is "
                             "kept: start the server again (`synth server start`) and rerun to resume")
    return None


class _NoTraceback(logging.Formatter):
    """Formats with the wrapped formatter, leaving out exception and stack text."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def quiet_prefect_console(after_flow: bool = False) -> None:
    """Prefect's console handlers print no tracebacks (call after prefect is imported);
    `after_flow`: nothing below ERROR either (the temporary server's shutdown lines)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    seen = set()
    for name in ["", "prefect", *logging.root.manager.loggerDict]:
        logger = logging.getLogger(name)
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler) and id(handler) not in seen:
                seen.add(id(handler))
                if not isinstance(handler.formatter, _NoTraceback):
                    handler.setFormatter(_NoTraceback(handler.formatter))
                    handler.formatter.level = handler.level
                handler.setLevel(logging.ERROR if after_flow else handler.formatter.level)
