"""Parsing model output never raises: text becomes fields or a reason."""

from __future__ import annotations

import json

import pytest

from synth.prompting.parsing import extract_json, json_schema_for, parse_fields
from synth.reject import Reject
from synth.task.formats import OutputField

FIELDS = {"question": OutputField(description="q"), "n": OutputField(description="n", type="integer")}


def test_good_json():
    assert parse_fields('{"question": " What? ", "n": "1,200"}', FIELDS) == {"question": "What?", "n": 1200}


def test_fenced_and_prose():
    assert parse_fields('Sure!\n```json\n{"question": "Q", "n": 2}\n```', FIELDS)["n"] == 2
    assert parse_fields('Here: {"question": "Q", "n": 3} done', FIELDS)["n"] == 3


@pytest.mark.parametrize("text, finish, reason", [
    ("", "stop", "empty_output"),
    ("not json", "stop", "invalid_json"),
    ('{"question": "Q", "n": ', "length", "truncated"),
    ('{"question": "Q"}', "stop", "missing_field"),
    ('{"question": "  ", "n": 1}', "stop", "empty_field"),
    ('{"question": "Q", "n": 1.5}', "stop", "wrong_type"),
    ('{"question": ["a"], "n": 1}', "stop", "wrong_type"),
    ('[1, 2]', "stop", "wrong_type"),
    ("x" * 300_000, "stop", "too_long"),
])
def test_failures_have_reasons(text, finish, reason):
    out = parse_fields(text, FIELDS, finish)
    assert isinstance(out, Reject) and out.reason == reason


def test_nul_and_surrogates_do_not_crash():
    out = parse_fields(json.dumps({"question": "a\x00b \ud800 c", "n": 1}), FIELDS)
    assert out["question"] == "ab \ud800 c"
    assert isinstance(extract_json("\ud800{"), Reject)


def test_schema():
    schema = json_schema_for(FIELDS)
    assert schema["required"] == ["question", "n"] and schema["properties"]["n"]["type"] == "integer"
