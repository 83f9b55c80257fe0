"""What the tree builder asks a model at each stage, and how the answers are read.

Three stages per node: `pivots` (N example questions inside the node's subspace, one
request for all N), `dimension` (one new dimension that separates the pivots, with one
label per pivot: see `_attributes` for why not the paper's index lists) and `expand`
(the rest of that dimension's values). Each has a JSON schema with the bounds a grammar
can enforce and a parser that returns the parsed value or raises `Rejected` with the
reason the request row records (`invalid: ...`). Parsers never raise anything else on
model output.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

from synth.backends.base import GenerationResult
from synth.prompting.parsing import extract_json
from synth.reject import Reject, Rejected
from synth.tree.model import ANY

INVALID = "invalid"
EXPAND_ANSWERS = ("nothing_to_add", "more_complete", "more_open_ended")
MAX_LABEL_CHARS = 80  # dimension names and values are labels, not sentences
MAX_PIVOT_CHARS = 600


def _load_json(result: GenerationResult) -> Any:
    if result.error:
        raise Rejected(INVALID, f"backend error: {result.error}")
    text = (result.text or "").strip()
    if not text:
        raise Rejected(INVALID, "empty output")
    data = extract_json(text)
    if not isinstance(data, Reject):
        return data
    cut = " (cut at max_tokens: raise sampling.max_tokens)" if result.finish_reason == "length" else ""
    raise Rejected(INVALID, f"malformed JSON{cut}: {text[:80]!r}")


_NUMBERING = re.compile(r"^\(?\d{1,2}[.):]\s+")  # "1. ", "2) ": list numbering copied from the prompt


def _clean(text: str) -> str:
    return _NUMBERING.sub("", " ".join(text.split()))


def _label(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise Rejected(INVALID, f"{what} is {type(value).__name__}, not a string")
    value = _clean(value)
    if not value or value == ANY:
        raise Rejected(INVALID, f"{what} is empty")
    if len(value) > MAX_LABEL_CHARS:
        raise Rejected(INVALID, f"{what} is over {MAX_LABEL_CHARS} characters")
    return value


def parse_pivots(result: GenerationResult, n: int) -> list[str]:
    data = _load_json(result)
    if not isinstance(data, dict) or not isinstance(data.get("samples"), list):
        raise Rejected(INVALID, 'expected {"samples": [strings]}')
    seen, pivots = set(), []
    for item in data["samples"]:
        if isinstance(item, str):
            text = _clean(item)[:MAX_PIVOT_CHARS]
            if text and text.casefold() not in seen:
                seen.add(text.casefold())
                pivots.append(text)
    if len(pivots) < 2:
        raise Rejected(INVALID, f"{len(pivots)} distinct non-empty samples; need at least 2")
    return pivots[:n]


def _attributes(data: dict[str, Any], pivots: Sequence[str]) -> dict[Any, Any]:
    """The classification as {value: [pivot numbers]}, from either answer format.

    We ask for `labels` (one value per pivot, in order): a list of exactly n labels cannot
    miss or repeat a pivot, and SmolLM2-135M gave 0 valid answers in 8 in the paper's
    `attributes` format against 6 in 8 this way. `attributes` is still read, for models
    that answer the paper's way.
    """
    if isinstance(data.get("labels"), list):
        labels = data["labels"]
        if len(labels) != len(pivots):
            raise Rejected(INVALID, f"{len(labels)} labels for {len(pivots)} pivots; need one per pivot")
        out: dict[Any, list[int]] = {}
        spelling: dict[str, str] = {}  # "Farm" and "farm" are one value: the first spelling wins
        for i, label in enumerate(labels, 1):
            key = _label(label, f"label {i}")
            if len(key) >= 20 and _clean(pivots[i - 1]).casefold().startswith(key.casefold()):
                raise Rejected(INVALID, f"label {i} copies its pivot instead of naming a value")
            out.setdefault(spelling.setdefault(key.casefold(), key), []).append(i)
        return out
    if isinstance(data.get("attributes"), dict):
        return data["attributes"]
    raise Rejected(INVALID, 'expected {"dimension": string, "labels": [one value per pivot]}')


def parse_dimension(result: GenerationResult, pivots: Sequence[str], excluded: Iterable[str],
                    max_values: int) -> tuple[str, list[str]]:
    """-> (dimension, values ordered by how many pivots each got)."""
    n_pivots = len(pivots)
    data = _load_json(result)
    if not isinstance(data, dict) or "dimension" not in data:
        raise Rejected(INVALID, 'expected {"dimension": string, "labels": [one value per pivot]}')
    dimension = _label(data["dimension"], "dimension")
    if not any(ch.isalpha() for ch in dimension):
        raise Rejected(INVALID, f"dimension {dimension!r} names nothing (no letters)")
    if dimension.casefold() in {d.casefold() for d in excluded}:
        raise Rejected(INVALID, f"dimension {dimension!r} is already on the path")
    seen: dict[int, str] = {}
    ranked = []
    names: set[str] = set()
    for position, (raw_value, indices) in enumerate(_attributes(data, pivots).items()):
        value = _label(raw_value, "a value")
        if value.casefold() in names:
            raise Rejected(INVALID, f"value {value!r} is given twice")
        if value.casefold() == dimension.casefold():
            raise Rejected(INVALID, f"value {value!r} repeats the dimension's name")
        names.add(value.casefold())
        if not isinstance(indices, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in indices):
            raise Rejected(INVALID, f"value {value!r}: pivots must be a list of whole numbers")
        for i in indices:
            if not 1 <= i <= n_pivots:
                raise Rejected(INVALID, f"value {value!r}: pivot {i} does not exist (1..{n_pivots})")
            if i in seen:
                raise Rejected(INVALID, f"pivot {i} is under both {seen[i]!r} and {value!r}")
            seen[i] = value
        ranked.append((-len(indices), min(indices, default=n_pivots + 1), position, value))
    missing = sorted(set(range(1, n_pivots + 1)) - set(seen))
    if missing:
        raise Rejected(INVALID, f"pivots {', '.join(map(str, missing))} are under no value")
    if not 2 <= len(ranked) <= max_values:
        raise Rejected(INVALID, f"{len(ranked)} distinct values; need 2 to {max_values}")
    return dimension, [value for *_, value in sorted(ranked)]


def parse_expansion(result: GenerationResult, known: Sequence[str]) -> tuple[str, list[str]]:
    """-> (answer kind, new values not already known)."""
    data = _load_json(result)
    if not isinstance(data, dict) or data.get("answer") not in EXPAND_ANSWERS:
        raise Rejected(INVALID, f'expected {{"new_values": [strings], "answer": one of {", ".join(EXPAND_ANSWERS)}}}')
    answer = data["answer"]
    raw = data.get("new_values", [])
    if not isinstance(raw, list):
        raise Rejected(INVALID, "new_values is not a list")
    if answer == "nothing_to_add":
        return answer, []
    seen = {v.casefold() for v in known}
    new = []
    for item in raw:
        try:
            value = _label(item, "a new value")
        except Rejected:
            continue  # one bad value does not spoil the others
        if value.casefold() not in seen and value not in EXPAND_ANSWERS:
            seen.add(value.casefold())
            new.append(value)
    return answer, new


# -- schemas ---------------------------------------------------------------------------


# Bounds the grammar can enforce (llama.cpp honours maxLength, minItems/maxItems and enum,
# not minProperties or integer minimum/maximum): short strings keep a weak model from
# writing until max_tokens.
LABEL_SCHEMA_CHARS = 40
PIVOT_SCHEMA_CHARS = 300


def pivots_schema(n: int) -> dict[str, Any]:
    sample = {"type": "string", "minLength": 1, "maxLength": PIVOT_SCHEMA_CHARS}
    return {"type": "object", "properties": {"samples": {
        "type": "array", "items": sample, "minItems": n, "maxItems": n}},
        "required": ["samples"]}


def dimension_schema(n_pivots: int) -> dict[str, Any]:
    label = {"type": "string", "minLength": 1, "maxLength": LABEL_SCHEMA_CHARS}
    # a name starts with a letter: small models otherwise answer "2" or "3,2" here
    name = {**label, "pattern": "^[A-Za-z][A-Za-z0-9 _-]*$"}
    return {"type": "object", "properties": {
        "dimension": name,
        "labels": {"type": "array", "items": label, "minItems": n_pivots, "maxItems": n_pivots}},
        "required": ["dimension", "labels"]}


def expand_schema(infinite_threshold: int) -> dict[str, Any]:
    value = {"type": "string", "minLength": 1, "maxLength": LABEL_SCHEMA_CHARS}
    return {"type": "object", "properties": {
        "new_values": {"type": "array", "items": value, "maxItems": 2 * infinite_threshold},
        "answer": {"type": "string", "enum": list(EXPAND_ANSWERS)}},
        "required": ["new_values", "answer"]}

