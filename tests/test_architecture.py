"""The import direction flows -> storage -> synth, and prefect only in flows/."""

from __future__ import annotations

import ast
import builtins
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
    bad.write_text("import prefect\nfrom storage.catalog import Catalog\n")
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
    assert importers == ["synth/ray_replicas.py", "synth/replica.py"]
    for name in importers:
        module = ast.parse((ROOT / name).read_text())
        at_import = [node for node in module.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert not any("ray" in {alias.name.split(".")[0] for alias in node.names} if isinstance(node, ast.Import)
                       else (node.module or "").split(".")[0] == "ray" for node in at_import)  # in functions only
    code = ("import sys, synth.ray_replicas, synth.replica, synth.recipe, storage.runs, flows.run, flows.cli;"
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


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
