"""The import direction flows -> storage -> synth, and prefect only in flows/."""

from __future__ import annotations

import ast
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
