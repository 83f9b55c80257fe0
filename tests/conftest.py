"""Shared fixtures: a small valid recipe written to a temp folder, with a seed slice."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GSM8K_SLICE = ROOT / "recipes" / "seeds" / "gsm8k_120.jsonl"

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


def base_recipe(tmp_path: Path, **overrides) -> dict:
    seeds = tmp_path / "seeds.jsonl"
    if not seeds.exists():
        rows = [json.loads(line) for line in GSM8K_SLICE.read_text().splitlines()[:12]]
        seeds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = {
        "task": {
            "name": "math-test",
            "description": "Grade-school math word problems with worked solutions.",
            "output_fields": {
                "question": {"description": "a math word problem"},
                "answer": {"description": "worked solution ending in #### <number>"},
            },
        },
        "seeds": {"path": "seeds.jsonl"},
        "generation": {"target": 6, "budget": 40, "chunk_size": 4},
        "backend": {"kind": "scripted", "sampling": {"max_tokens": 64, "seed": 1}},
        "catalog": str(tmp_path / "catalog.duckdb"),
        "export": {"dir": str(tmp_path / "out")},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        elif value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def write_recipe(tmp_path: Path, **overrides) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(base_recipe(tmp_path, **overrides), sort_keys=False))
    return path


@pytest.fixture
def recipe_path(tmp_path: Path) -> Path:
    return write_recipe(tmp_path)
