"""The import direction flows -> storage -> synth, and prefect only in flows/; inside storage/,
the groups import down one order, inside synth/ each group imports only the groups listed for
it; no folder holds more than a dozen modules side by side; no two public names mean two things;
tests read the catalog through its read methods, SQL only where the SQL is what they test."""

from __future__ import annotations

import ast
import builtins
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "synth": {"storage", "flows", "prefect"},
    "storage": {"flows", "prefect"},
    "flows": set(),
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_imports_go_one_way():
    offenders = []
    for package, forbidden in FORBIDDEN.items():
        for path in (ROOT / package).rglob("*.py"):
            bad = imported_roots(path) & forbidden
            if bad:
                offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert offenders == []


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import prefect\nfrom storage.catalog.catalog import Catalog\n")
    assert imported_roots(bad) >= {"prefect", "storage"}


def test_no_engine_imported_at_import_time():
    import subprocess
    import sys

    code = ("import sys, synth.backends, synth.backends.vllm, synth.backends.llamacpp, synth.backends.openai;"
            "print(sorted(m for m in ('vllm', 'llama_cpp', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_ray_is_imported_only_by_the_replica_module_and_only_when_used():
    """`ray` is an optional extra: the factory imports without it (docs/scaling.md)."""
    import subprocess
    import sys

    importers = sorted(str(path.relative_to(ROOT)) for package in FORBIDDEN for path in (ROOT / package).rglob("*.py")
                       if "ray" in imported_roots(path))
    assert importers == ["synth/execution/ray.py", "synth/execution/replica.py"]
    for name in importers:
        module = ast.parse((ROOT / name).read_text())
        at_import = [node for node in module.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert not any("ray" in {alias.name.split(".")[0] for alias in node.names} if isinstance(node, ast.Import)
                       else (node.module or "").split(".")[0] == "ray" for node in at_import)  # in functions only
    code = ("import sys, synth.execution.ray, synth.execution.replica, synth.config.recipe, storage.runs.runs,"
            " storage.runs.lifecycle, flows.run, flows.cli;"
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


# --- one life cycle, executors side by side ------------------------------------------------------

def test_the_executors_live_together_and_the_recipe_picks_one():
    """synth/execution/ holds the contract and every executor; outside it, code asks
    `executor_for(recipe.cluster, ...)` and never names an executor or the pool's type."""
    graph = import_graph(ROOT)
    inside = {"synth.execution", "synth.execution.base", "synth.execution.local", "synth.execution.ray",
              "synth.execution.replica"}
    assert inside <= set(graph)
    for name, targets in graph.items():
        if name in inside:
            assert not {t for t in targets if t.startswith(("storage", "flows"))}, name
            continue
        assert not targets & {"synth.execution.local", "synth.execution.ray", "synth.execution.replica"} or \
            name == "flows.preflight", f"{name} imports an executor; ask synth.execution.executor_for"
    offenders = [str(path.relative_to(ROOT)) for package in ("synth", "storage", "flows")
                 for path in (ROOT / package).rglob("*.py")
                 if "isinstance(" in (text := path.read_text()) and "ReplicaPool)" in text]
    assert offenders == []


def test_the_run_sequence_is_written_once():
    """Only storage/runs/lifecycle.py makes a RunLedger and runs it; the flow, the benchmarks and the
    tests' helpers go through the life cycle, and the life cycle never imports prefect."""
    makers = sorted(str(path.relative_to(ROOT)) for folder in ("flows", "storage", "synth", "benchmarks", "tests")
                    for path in (ROOT / folder).rglob("*.py")
                    if "RunLedger(" in path.read_text() and path.name != "test_architecture.py")
    assert makers == ["storage/runs/lifecycle.py"]
    assert "prefect" not in imported_roots(ROOT / "storage" / "runs" / "lifecycle.py")
    assert "storage.runs.lifecycle" in import_graph(ROOT)["flows.run"]


# --- one error base -----------------------------------------------------------------------------

# Exceptions that never reach a person: control flow inside one module, not errors.
NOT_ERRORS = {"Rejected", "_Retryable", "_Refused"}
BUILTIN_EXCEPTIONS = {name for name, value in vars(builtins).items()
                      if isinstance(value, type) and issubclass(value, BaseException)}


def exception_classes(paths) -> dict[str, list[str]]:
    """{class name: its base names} of every exception class defined in `paths` (by name: a
    class whose base is a built-in exception or another class found here)."""
    classes = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                classes[node.name] = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
    found: dict[str, list[str]] = {}
    grew = True
    while grew:
        grew = False
        for name, bases in classes.items():
            if name not in found and any(b in BUILTIN_EXCEPTIONS or b in found for b in bases):
                found[name] = bases
                grew = True
    return found


def test_every_error_derives_from_the_one_base():
    """flows/errors.py maps SynthError to its exit code and line: an error class outside it
    would be a traceback at the command line."""
    found = exception_classes(path for package in FORBIDDEN for path in (ROOT / package).rglob("*.py"))
    assert {"RecipeError", "CatalogError", "ServerError", "SandboxUnavailable"} <= set(found)

    def ours(name: str) -> bool:
        return name in {"SynthError", "BadInput"} or any(ours(b) for b in found.get(name, []))

    assert sorted(name for name in found if name not in NOT_ERRORS and not ours(name)) == []
    assert len([name for name in found if name not in NOT_ERRORS]) >= 24


def test_the_error_check_sees_a_stray_error(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("class Fine(SynthError, ValueError): ...\nclass Stray(RuntimeError): ...\n"
                   "class StrayChild(Stray): ...\n")
    assert set(exception_classes([bad])) == {"Fine", "Stray", "StrayChild"}


# --- no import circles, and the command line's layering -----------------------------------------

PACKAGES = ("synth", "storage", "flows", "prompts")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """{module: the project's modules it imports}, every import counted: at the top, inside
    functions and under TYPE_CHECKING alike (each is a dependency a reader has to follow).
    `from a.b import c` points at a.b.c when that is a module, else at a.b."""
    files = {module_name(root, p): p for package in packages for p in (root / package).rglob("*.py")}

    def known(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, `level - 1` folders up
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets |= {f"{base}.{alias.name}" for alias in node.names}
        graph[name] = {t for t in map(known, targets) if t and t != name}
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_import_circles():
    graph = import_graph(ROOT)
    assert {"synth.config.recipe", "synth.task.task", "flows.cli", "flows.cli.common", "storage.catalog.catalog",
            "storage.runs.lifecycle"} <= set(graph)
    assert import_circles(graph) == []


def test_the_circle_check_sees_a_circle(tmp_path):
    (tmp_path / "synth" / "sub").mkdir(parents=True)
    (tmp_path / "synth" / "__init__.py").write_text("")
    (tmp_path / "synth" / "a.py").write_text("def f():\n    from synth.sub import b\n")
    (tmp_path / "synth" / "sub" / "__init__.py").write_text("from .b import g\n")
    (tmp_path / "synth" / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\n"
                                                     "if TYPE_CHECKING:\n    from synth.a import f\n")
    (tmp_path / "synth" / "c.py").write_text("import synth.a\n")
    graph = import_graph(tmp_path, ("synth",))
    assert graph["synth.sub"] == {"synth.sub.b"} and graph["synth.c"] == {"synth.a"}
    assert import_circles(graph) == [["synth.a", "synth.sub.b"]]


def test_the_command_line_is_one_module_per_command():
    """flows/cli/: every command module is in COMMANDS and has `add_command`; a command imports
    from the package only `flows.cli.common`, which imports no command."""
    from flows.cli import COMMANDS, build_parser

    here = ROOT / "flows" / "cli"
    commands = {p.stem for p in here.glob("*.py")} - {"__init__", "__main__", "common"}
    assert commands == {entry for entry in COMMANDS if ":" not in entry and "." not in entry}
    graph = import_graph(ROOT)
    for name in commands:
        inside = {m for m in graph[f"flows.cli.{name}"] if m == "flows.cli" or m.startswith("flows.cli.")}
        assert inside <= {"flows.cli.common"}, f"flows/cli/{name}.py imports {sorted(inside)}"
    assert not {m for m in graph["flows.cli.common"] if m.startswith("flows.cli.")}
    assert not {m for m in graph["flows.cli"] if m.startswith("flows.cli.")} - {"flows.cli.common"}
    subcommands = build_parser()._subparsers._group_actions[0].choices
    assert set(subcommands) >= {"run", "plan", "report", "tree", "export", "stats", "catalog", "server", "serve",
                                "eval"}


# --- folders that show the groups ---------------------------------------------------------------

MAX_MODULES = 12

def modules_at(folder: Path) -> list[str]:
    """The modules side by side in a folder: its .py files but the package's own __init__.py
    and __main__.py."""
    return sorted(p.name for p in folder.glob("*.py") if p.name not in {"__init__.py", "__main__.py"})


def test_no_folder_holds_more_than_a_dozen_modules():
    folders = {p.parent for package in ("synth", "storage", "flows") for p in (ROOT / package).rglob("*.py")}
    crowded = {str(f.relative_to(ROOT)): len(modules_at(f)) for f in folders if len(modules_at(f)) > MAX_MODULES}
    assert crowded == {}, f"group these folders into sub-packages: {crowded}"


# storage/'s groups, in the order they may import: each imports only itself and the groups
# before it (publish imports reports: the card shows the report's figures; runs may import all,
# and none imports runs). The root holds only the package's docstring.
STORAGE_LAYERS = ("catalog", "tables", "reports", "publish", "runs")


def storage_layer_violations(graph: dict[str, set[str]]) -> list[str]:
    def rank(module: str) -> int | None:
        parts = module.split(".")
        return STORAGE_LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in STORAGE_LAYERS else None

    offenders = []
    for name, targets in graph.items():
        if name != "storage" and not name.startswith("storage."):
            continue
        for target in sorted(t for t in targets if t == "storage" or t.startswith("storage.")):
            if rank(name) is None or rank(target) is None or rank(target) > rank(name):
                offenders.append(f"{name} imports {target}")
    return offenders


def test_storage_groups_import_down_the_layers():
    graph = import_graph(ROOT)
    assert modules_at(ROOT / "storage") == []
    assert sorted(p.parent.name for p in (ROOT / "storage").glob("*/__init__.py")) == sorted(STORAGE_LAYERS)
    assert storage_layer_violations(graph) == []


def test_the_layer_check_sees_an_upward_import():
    graph = {"storage.catalog.catalog": {"storage.catalog.faults", "synth.ids"},
             "storage.tables.trees": {"storage.catalog.catalog"},
             "storage.reports.report": {"storage.publish.card", "storage.tables.trees"},
             "storage.runs.runs": {"storage.publish.publish", "storage.catalog.bulk"},
             "storage.stray": set()}
    assert storage_layer_violations(graph) == ["storage.reports.report imports storage.publish.card"]
    graph["storage.tables.trees"].add("storage.stray")
    assert set(storage_layer_violations(graph)) == {"storage.reports.report imports storage.publish.card",
                                                    "storage.tables.trees imports storage.stray"}


# synth/'s root: what every group imports; these import none of ours but each other.
SYNTH_ROOT = {"errors", "ids", "reject", "slot"}
# synth/'s groups, each with the groups it may import besides itself and the root, bottom-up
# (the table has no circle: checked below). task/ sits under backends/, which read its formats;
# prompting/ (a call and its reply) above them; config/ holds the recipe's sections, so it
# imports every part whose settings a recipe holds; planning/ reads the recipe; measures/
# scores a dataset after it is made and nothing in synth/ imports it; execution/ (with the
# chunk pipeline once it moves) runs what the recipe asks.
SYNTH_GROUPS = {
    "task": set(),
    "backends": {"task"},
    "prompting": {"task", "backends"},
    "verify": set(),
    "strategies": {"task", "prompting"},
    "similarity": {"backends"},
    "tree": {"backends", "prompting"},
    "curation": {"task", "prompting", "similarity"},
    "config": {"task", "backends", "prompting", "verify", "strategies", "similarity", "curation"},
    "planning": {"strategies", "tree", "config"},
    "measures": {"task", "backends", "verify", "similarity"},
    "execution": {"task", "backends", "prompting", "verify", "strategies", "curation", "config"},
}
# Package files that are a part's API rather than a docstring: the registries (BACKENDS,
# VERIFIERS, STRATEGIES), the tree's names and executor_for. Every other group's
# __init__.py re-exports nothing.
SYNTH_PACKAGE_APIS = {"backends", "verify", "strategies", "tree", "execution"}


def synth_group(module: str) -> str | None:
    """The group a synth module belongs to: '' for the root's modules (and the package
    itself), None for a module in no group (itself an offence)."""
    parts = module.split(".")
    if len(parts) == 1:
        return ""
    if len(parts) == 2 and parts[1] in SYNTH_ROOT:
        return ""
    return parts[1] if parts[1] in SYNTH_GROUPS else None


def synth_layer_violations(graph: dict[str, set[str]]) -> list[str]:
    offenders = []
    for name, targets in graph.items():
        if name != "synth" and not name.startswith("synth."):
            continue
        group = synth_group(name)
        for target in sorted(t for t in targets if t == "synth" or t.startswith("synth.")):
            to = synth_group(target)
            allowed = to == "" or to == group or bool(group and to in SYNTH_GROUPS[group])
            if group is None or to is None or not allowed:
                offenders.append(f"{name} imports {target}")
    return offenders


def test_synth_groups_import_only_the_groups_listed_for_them():
    graph = import_graph(ROOT)
    assert set(modules_at(ROOT / "synth")) == {f"{name}.py" for name in SYNTH_ROOT}
    assert sorted(p.parent.name for p in (ROOT / "synth").glob("*/__init__.py")) == sorted(SYNTH_GROUPS)
    assert synth_layer_violations(graph) == []
    assert import_circles({group: set(allowed) for group, allowed in SYNTH_GROUPS.items()}) == []


def test_the_synth_layer_check_sees_a_stray_import():
    graph = {"synth.task.formats": {"synth.reject"},
             "synth.config.seeds": {"synth.config.recipe", "synth.ids"},
             "synth.config.recipe": {"synth.backends", "synth.config.cluster"},
             "synth.planning.plan": {"synth.strategies", "synth.measures.figures"},
             "synth.ids": {"synth.errors", "synth.task.task"},
             "synth.curation.filters": {"synth.task.formats", "synth.planning.plan"},
             "synth.stray": set(),
             "synth.curation.dedup": {"synth.stray", "synth.similarity.minhash"}}
    assert synth_layer_violations(graph) == ["synth.planning.plan imports synth.measures.figures",
                                             "synth.ids imports synth.task.task",
                                             "synth.curation.filters imports synth.planning.plan",
                                             "synth.curation.dedup imports synth.stray"]
    assert import_circles({**SYNTH_GROUPS, "task": {"config"}}) != []


def test_a_name_has_one_import_path():
    """storage/'s package files, and synth/'s but the parts' APIs, re-export nothing: `from
    storage.catalog.catalog import Catalog` is the one path to the class, not one of two."""
    inits = [*(ROOT / "storage").rglob("__init__.py"),
             *(ROOT / "synth" / group / "__init__.py" for group in set(SYNTH_GROUPS) - SYNTH_PACKAGE_APIS)]
    for init in inits:
        tree = ast.parse(init.read_text(), str(init))
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))], init


def public_names(paths) -> dict[str, list[str]]:
    """{name: the files defining it} for every public module-level function and class."""
    found: dict[str, list[str]] = {}
    for path in paths:
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                found.setdefault(node.name, []).append(str(path))
    return found


def test_a_public_name_means_one_thing():
    """A name says one thing across synth/ and storage/ (issue 25: two `leaf_counts`, two
    `plot_leaf_distribution` and two `assemble` meant two things each). flows/ is left out:
    its commands each have `add_command` by design."""
    names = public_names(path for package in ("synth", "storage") for path in (ROOT / package).rglob("*.py"))
    assert {name: modules for name, modules in names.items() if len(modules) > 1} == {}


def test_the_name_check_sees_a_second_meaning(tmp_path):
    (tmp_path / "a.py").write_text("def leaf_counts(): ...\nclass Tree: ...\ndef _private(): ...\n")
    (tmp_path / "b.py").write_text("def leaf_counts(): ...\ndef _private(): ...\n")
    names = public_names([tmp_path / "a.py", tmp_path / "b.py"])
    assert {name for name, modules in names.items() if len(modules) > 1} == {"leaf_counts"}


def test_every_package_is_in_the_distribution():
    """pyproject.toml lists the packages by hand: one left out installs editable and is missing
    from a wheel."""
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = {module_name(ROOT, p) for package in PACKAGES for p in (ROOT / package).rglob("__init__.py")}
    assert sorted(listed) == sorted(found)


# --- tests through the front door -----------------------------------------------------------------

SQL_WORD = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b")
# Test files whose subject is the SQL or the storage itself, and how many SQL strings each
# holds. Everywhere else a test reads the catalog through its read methods (samples,
# requests, runs, count, failed_chunks; storage/tables/* for the other tables) and the run
# life cycle. Removing SQL from a file here: lower its number (to 0: drop the file).
SQL_ALLOWED = {
    "tests/test_bulk.py": 21,  # bulk ingest's own layout: segments, text in or out of the table, settings
    "tests/test_judge.py": 11,  # a schema-1 catalog written by hand and migrated
    "tests/test_datasets.py": 6,  # a schema-3 catalog made in place and migrated
    "tests/test_export.py": 6,  # states no public write makes (re-marked, rewritten, tree-less samples)
    "tests/test_faults.py": 3,  # the segments table; a backup compared with its source table by table
    "tests/catalog_fill.py": 2,  # a hand-made tree with fixed ids, written as its rows
    "tests/fault_env.py": 2,  # where a table's blocks lie in the file, to damage them
    "tests/test_catalog_reads.py": 1,  # a column name that tries to smuggle SQL in
    "tests/test_cli.py": 1,  # a request row deleted, which no path of the factory does
    "tests/test_reliability.py": 1,  # the schema survives SQL-looking model output
    "tests/test_architecture.py": 2,  # this check's own pattern and example
    # vLLM's own environment: the catalog is read by the main environment's bare duckdb in a child
    "tests/vllm/test_vllm_server.py": 2,
    "tests/vllm/test_vllm_ray.py": 1,
}


def sql_strings(path: Path) -> int:
    """String literals in `path` that hold an SQL statement word (an f-string counts once; a
    docstring or other bare string statement not at all)."""
    tree = ast.parse(path.read_text(), str(path))
    skip = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    skip |= {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    count = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and id(node) not in skip:
            text = "".join(part.value for part in node.values if isinstance(part, ast.Constant))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value
        else:
            continue
        count += bool(SQL_WORD.search(text))
    return count


def test_tests_do_not_creep_back_to_raw_sql():
    found = {str(path.relative_to(ROOT)): n for path in sorted((ROOT / "tests").rglob("*.py"))
             if (n := sql_strings(path))}
    assert found == SQL_ALLOWED, ("read the catalog through Catalog.samples/requests/runs/count/failed_chunks "
                                  "or storage/tables/*; a test about the SQL itself goes in SQL_ALLOWED, with why")


def test_the_sql_count_sees_sql_and_not_prose(tmp_path):
    module = tmp_path / "x.py"
    module.write_text('"""SELECT in a docstring is prose."""\n'
                      'def f(cat, t):\n'
                      '    """UPDATE: not counted either."""\n'
                      '    cat.query("SELECT 1")\n'
                      '    cat.query(f"DELETE FROM {t} WHERE x = ?")\n'
                      '    return "selected", "an update"\n')
    assert sql_strings(module) == 2


def private_patches(path: Path) -> list[str]:
    """`monkeypatch.setattr(owner, "_name", ...)` / `setitem(..., "_name", ...)` calls in `path`:
    a test that swaps a private name tests the code's insides, not what it offers."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"setattr", "delattr"} and node.args):
            continue
        # setattr(owner, "name", value), or setattr("package.module.name", value)
        named = node.args[1] if len(node.args) >= 3 or node.func.attr == "delattr" and len(node.args) == 2 else node.args[0]
        if isinstance(named, ast.Constant) and isinstance(named.value, str):
            name = named.value.rsplit(".", 1)[-1]
            if name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
                found.append(f"{path.name}:{node.lineno} {name}")
    return found


def test_tests_patch_no_private_name():
    found = [hit for path in sorted((ROOT / "tests").rglob("*.py")) if path.name != "test_architecture.py"
             for hit in private_patches(path)]
    assert found == [], "give the code a parameter (a path, a reader, a size) instead of patching its insides"


def test_the_patch_check_sees_a_private_name(tmp_path):
    module = tmp_path / "x.py"
    module.write_text('def test(monkeypatch, m):\n'
                      '    monkeypatch.setattr(m, "_secret", 1)\n'
                      '    monkeypatch.setattr("pkg.mod._hidden", 2)\n'
                      '    monkeypatch.setattr(m, "public", 3)\n'
                      '    monkeypatch.setattr(m, "__init__", 4)\n')
    assert private_patches(module) == ["x.py:2 _secret", "x.py:3 _hidden"]
