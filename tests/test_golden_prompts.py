"""Golden copies of every built-in prompt, rendered with its registered example
variables, so a template change shows in review as a change of tests/golden/.

After changing a template on purpose: `SYNTH_UPDATE_GOLDEN=1 python -m pytest
tests/test_golden_prompts.py` rewrites the golden files; review and commit them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import flows.preflight  # noqa: F401  (imports every template's owner, which registers its examples)
from synth.prompting.render import Renderer, builtin_names, example_variables, registered_examples

GOLDEN = Path(__file__).parent / "golden"


def golden_path(name: str) -> Path:
    return GOLDEN / (name.replace("/", "__").removesuffix(".jinja2") + ".txt")


def test_every_built_in_prompt_has_example_variables():
    assert builtin_names() == registered_examples()


@pytest.mark.parametrize("name", builtin_names())
def test_rendered_prompt_matches_its_golden_copy(name):
    text = Renderer().render(name, example_variables(name)) + "\n"
    path = golden_path(name)
    if os.environ.get("SYNTH_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden copy {path}: run with SYNTH_UPDATE_GOLDEN=1 once and review it"
    assert text == path.read_text(encoding="utf-8"), (
        f"{name} renders differently from {path}; if the change is wanted, rerun with SYNTH_UPDATE_GOLDEN=1")
