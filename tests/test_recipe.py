"""Recipe validation: good recipes load, broken ones name the field and what to write."""

from __future__ import annotations

from pathlib import Path

import pytest

from synth.config.recipe import RecipeError, load_recipe, parse_recipe
from tests.conftest import ROOT, base_recipe, write_recipe


def test_example_recipes_load():
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        recipe = load_recipe(path)
        assert recipe.task.name
        assert recipe.resolve_input(recipe.seeds.path).is_file()


def test_hash_ignores_where_outputs_go(tmp_path):
    a = parse_recipe(base_recipe(tmp_path), base_dir=tmp_path)
    b = parse_recipe({**base_recipe(tmp_path), "catalog": "elsewhere.duckdb"}, base_dir=tmp_path)
    c = parse_recipe(base_recipe(tmp_path, generation={"target": 7}), base_dir=tmp_path)
    assert a.hash() == b.hash()
    assert a.hash() != c.hash()


@pytest.mark.parametrize("overrides, needle", [
    ({"colour": "blue"}, "unknown key 'colour'"),
    ({"generation": {"target": 0}}, "generation.target"),
    ({"generation": {"target": "many"}}, "write a whole number"),
    ({"generation": {"strategy": "magic"}}, "unknown strategy 'magic'"),
    ({"backend": {"kind": "gpt5"}}, "unknown backend 'gpt5'"),
    ({"backend": {"kind": "openai", "api_key_env": "sk-abc def"}}, "NAME of an environment variable"),
    ({"seeds": {"path": "nowhere.jsonl"}}, "seeds.path: no file"),
    ({"seeds": {"path": "seeds.jsonl", "fields": {"solution": "answer"}}}, "seeds.fields maps 'solution'"),
    ({"task": None}, "task: required"),
    ({"tree": {"max_values": 8, "infinite_threshold": 4}}, "infinite_threshold"),
    ({"quality": {"min_chars": 50, "max_chars": 10}}, "max_chars"),
    ({"quality": {"filters": ["length", "sparkle"]}}, "quality.filters.1.kind: unknown filter 'sparkle'; write one of"),
    ({"quality": {"filters": [{"min_chars": 3}]}}, "quality.filters.0.kind: required"),
    ({"quality": {"filters": [{"kind": "length", "max_chars": 0}]}}, "quality.filters.0.max_chars: Input should be"),
    ({"quality": {"filters": [{"kind": "length", "min_chars": 90, "max_chars": 20}]}}, "quality.filters.0: max_chars"),
    ({"quality": {"filters": [{"kind": "repetition", "max_shar": 0.5}]}}, "quality.filters.0.max_shar: unknown key"),
    ({"quality": {"filters": "length"}}, "quality.filters: Input should be a valid list"),
    ({"quality": {"filters": ["refusal", "length", "refusal"]}}, "refusal listed more than once"),
    ({"quality": {"min_chars": 1, "filters": ["length"]}}, "`- {kind: length, min_chars: 1}`"),
    ({"seeds": None, "generation": {"strategy": "answer_augmentation"}}, "add a `seeds:` section"),
])
def test_broken_recipes_name_the_field(tmp_path, overrides, needle):
    path = write_recipe(tmp_path, **overrides)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert needle in str(caught.value)


def test_only_a_filter_list_changes_the_hash_and_the_list_round_trips(tmp_path):
    plain = parse_recipe(base_recipe(tmp_path), base_dir=tmp_path)
    assert "filters" not in plain.identity()["quality"]  # no list: the run id it had before the list existed
    listed = parse_recipe(base_recipe(tmp_path, quality={"filters": ["refusal", {"kind": "length", "min_chars": 3}]}),
                          base_dir=tmp_path)
    assert listed.hash() != plain.hash()
    dumped = listed.model_dump(mode="json", exclude={"base_dir"})
    assert dumped["quality"]["filters"] == [{"kind": "refusal", "enabled": True},
                                            {"kind": "length", "enabled": True, "min_chars": 3, "max_chars": 8000}]
    assert parse_recipe(dumped, base_dir=tmp_path).hash() == listed.hash()


def test_unreadable_yaml_says_where(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("task:\n  name: [unclosed\n")
    with pytest.raises(RecipeError, match="not readable YAML at line"):
        load_recipe(path)


def test_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="no recipe file"):
        load_recipe(tmp_path / "absent.yaml")
