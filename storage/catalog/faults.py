"""What a failing file or DuckDB call means for a person, in one sentence, and a physical
check of a catalog's file.

`describe(exc, path)` turns an environment fault into a line that names the file, says
what is wrong and what to do; it returns None for anything else (a bug in a query stays
an exception with its traceback). The faults it knows:

    corrupt file        DuckDB "Corrupt database file: computed checksum ... does not match"
    not a catalog       DuckDB "... is not a valid DuckDB database file"
    not writable        EACCES / EPERM / EROFS, DuckDB "Permission denied" / "Read-only file system"
    a file in the way   ENOTDIR / EEXIST on a folder of the path
    disk full           ENOSPC, DuckDB / Arrow "No space left on device"

`physical_problems(con)` reads every row of every table (each column hashed, so nothing
is skipped by projection) and looks up one key through every primary key and unique
index: DuckDB checks each block's checksum when it reads it, so a damaged data or index
block shows up here as a sentence instead of in the middle of a later run. Damaged
blocks of a multi-column index are read only when a write reaches them; they fail that
write with the same sentence.

Example::

    >>> describe(OSError(28, "No space left on device", "out/data/x.parquet"))
    'no space left on device writing out/data/x.parquet: free some space (or write elsewhere) and run the command again'
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import duckdb

RECOVER = "see README > Reliability to recover it (the last export, a `synth catalog backup` copy, EXPORT DATABASE)"


def _kind(exc: BaseException) -> str | None:
    """corrupt / not_duckdb / no_space / not_writable / not_a_folder / missing / is_a_folder, or None."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    low = text.lower()
    if "corrupt database file" in low or ("checksum" in low and "does not match" in low):
        return "corrupt"
    if "not a valid duckdb database file" in low or "the file is not a valid" in low:
        return "not_duckdb"
    if code == errno.ENOSPC or "no space left on device" in low or "disk is full" in low:
        return "no_space"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS) or "permission denied" in low \
            or "read-only file system" in low:
        return "not_writable"
    if code in (errno.ENOTDIR, errno.EEXIST) or "not a directory" in low:
        return "not_a_folder"
    if code == errno.ENOENT:  # a file to read that is not there, or a folder that cannot be made (/proc/...)
        return "missing"
    if code == errno.EISDIR:
        return "is_a_folder"
    return None


def describe(exc: BaseException, path: str | Path | None = None, what: str = "") -> str | None:
    """One line for an environment fault while working on `path` (a catalog or an output
    folder; `what` says which, e.g. "the catalog"), or None if `exc` is not one."""
    kind = _kind(exc)
    if kind is None:
        return None
    filename = getattr(exc, "filename", None)
    name = path or filename
    thing = f"{what} {name}".strip() if name else (what or "a file")
    # the file the system named, when it is not the one we were asked about (a folder on its path)
    where = f" ({filename})" if filename and path and str(filename) != str(path) else ""
    if kind == "corrupt":
        return (f"{thing} is damaged ({_first_line(exc)}): nothing more can be read from the damaged part; "
                f"{RECOVER}")
    if kind == "not_duckdb":
        return (f"{thing} is not a DuckDB catalog: pass the right --catalog PATH, or move that file away "
                "and a new catalog is made there")
    if kind == "no_space":
        return (f"no space left on device writing {thing}{where}: free some space (or write elsewhere) and run "
                "the command again" + ("; a run resumes where it stopped, nothing committed is lost"
                                       if what == "the catalog" else ""))
    if kind == "not_writable":
        return (f"cannot write {thing}{where} ({_reason(exc)}): give this user write access to it and its folder, "
                "or pick another path")
    if kind == "missing":  # reading: not there; writing: a folder that cannot be made (under /proc, say)
        return f"cannot find or create {thing}{where} ({_reason(exc)}): check the path, or pick another one"
    if kind == "is_a_folder":
        return f"{thing}{where} is a folder, not a file: name a file"
    blocker = _file_in_the_way(Path(filename or name or "."))
    blocker_text = f"{blocker} is a file, not a folder" if blocker else "a part of that path is a file, not a folder"
    return f"cannot create {thing}: {blocker_text} ({_reason(exc)}); pick another path"


def _file_in_the_way(path: Path) -> Path | None:
    """The first part of `path` that exists and is not a folder."""
    for part in reversed([path, *path.parents]):
        if part.exists() and not part.is_dir():
            return part
    return None


def as_error(exc: BaseException, error: type[Exception], path: str | Path | None = None,
             what: str = "") -> BaseException:
    """`exc` as `error(one line)` when it is an environment fault, else `exc` itself."""
    message = describe(exc, path, what)
    return error(message) if message else exc


@contextmanager
def raising(error: type[Exception], path: str | Path | None = None, what: str = "") -> Iterator[None]:
    """Inside: an environment fault (OSError, DuckDB error) is raised again as `error(one line)`,
    chained to the original (`--debug` shows it); anything else passes unchanged."""
    try:
        yield
    except (duckdb.Error, OSError) as exc:
        translated = as_error(exc, error, path, what)
        if translated is exc:
            raise
        raise translated from exc


@contextmanager
def staged(final: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary name beside `final`, renamed to it when the block succeeds (atomic on one
    filesystem: a reader sees the old file or the new one) and removed when it fails, so a
    full disk keeps no partial file (nor the space it holds)."""
    tmp = final.with_name(final.name + suffix)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def physical_problems(con: Any) -> list[str]:
    """Every table read in full and every key index probed once; a sentence per damaged one."""
    problems: list[str] = []
    tables = [r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT temporary AND database_name = current_database() "
        "ORDER BY table_name").fetchall()]
    for table in tables:
        try:  # table names come from the catalog itself, quoted
            con.execute(f'SELECT count(hash(COLUMNS(*))) FROM "{table}"').fetchall()
        except Exception as exc:  # noqa: BLE001 - any read error is what this check reports
            problems.append(f"table {table} cannot be read in full: {_first_line(exc)}")
    keys = con.execute(
        "SELECT table_name, constraint_column_names FROM duckdb_constraints() "
        "WHERE constraint_type IN ('PRIMARY KEY', 'UNIQUE') AND database_name = current_database()").fetchall()
    for table, columns in keys:
        if any(p.startswith(f"table {table} ") for p in problems):
            continue
        cols = ", ".join(f'"{c}"' for c in columns)
        try:
            row = con.execute(f'SELECT {cols} FROM "{table}" LIMIT 1').fetchall()
            if row:
                where = " AND ".join(f'"{c}" = ?' for c in columns)
                con.execute(f'SELECT count(*) FROM "{table}" WHERE {where}', list(row[0])).fetchall()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"the key index of {table} ({', '.join(columns)}) cannot be read: {_first_line(exc)}")
    return problems
