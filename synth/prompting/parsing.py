"""Turn a model's text into a typed record, or into a typed reason why not.

Parsing never raises on model output: whatever the text (empty, truncated, not JSON,
10 MB of noise, NUL bytes), the caller gets either the fields or a `Reject` with a
short machine-readable reason and a human detail.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Mapping

from synth.backends.base import LENGTH_BOUND
from synth.reject import Reject
from synth.task.formats import field_schema

if TYPE_CHECKING:
    from synth.task.formats import OutputField

MAX_PARSE_CHARS = 200_000  # larger outputs are rejected unread: no sample is that long


_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.DOTALL)


def extract_json(text: str) -> Any | Reject:
    """The JSON value in `text`, tolerating a code fence or prose around one object.
    Every step that reads JSON from a model (generation, tree, classification, judge)
    reads it through here."""
    if len(text) > MAX_PARSE_CHARS:
        return Reject("too_long", f"{len(text)} characters, limit {MAX_PARSE_CHARS}")
    stripped = text.strip()
    if not stripped:
        return Reject("empty_output", "the model returned no text")
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    try:
        # strict=False: small models put raw newlines inside strings; the text is still usable
        return json.loads(stripped, strict=False)
    except json.JSONDecodeError as exc:
        first, last = stripped.find("{"), stripped.rfind("}")
        if 0 <= first < last:
            try:
                return json.loads(stripped[first:last + 1], strict=False)
            except (json.JSONDecodeError, RecursionError):
                pass
        return Reject("invalid_json", f"{exc.msg} at line {exc.lineno} column {exc.colno}")
    except RecursionError:
        return Reject("invalid_json", "nested too deep to read")


def json_schema_for(fields: Mapping[str, "OutputField"]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: field_schema(spec) for name, spec in fields.items()},
        "required": list(fields),
        "additionalProperties": False,
    }


def _coerce(name: str, value: Any, kind: str) -> Any | Reject:
    if kind == "string":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            return Reject("wrong_type", f"{name} should be text, got {type(value).__name__}")
        if "\x00" in value:
            value = value.replace("\x00", "")
        if not value.strip():
            return Reject("empty_field", f"{name} is empty")
        return value.strip()
    if isinstance(value, bool):
        return Reject("wrong_type", f"{name} should be a number, got a boolean")
    if isinstance(value, str):
        try:
            value = float(value.replace(",", "").strip())
        except ValueError:
            return Reject("wrong_type", f"{name} should be a number, got {value[:40]!r}")
    if not isinstance(value, (int, float)):
        return Reject("wrong_type", f"{name} should be a number, got {type(value).__name__}")
    if kind == "integer":
        if float(value) != int(value):
            return Reject("wrong_type", f"{name} should be a whole number, got {value}")
        return int(value)
    return float(value)


def parse_fields(text: str, fields: Mapping[str, "OutputField"], finish_reason: str | None = None
                 ) -> dict[str, Any] | Reject:
    value = extract_json(text)
    if isinstance(value, Reject):
        if finish_reason == "length":
            return Reject("truncated", f"hit max_tokens before the JSON closed ({value.detail})")
        return value
    if finish_reason == LENGTH_BOUND:
        return Reject("truncated", "ran to the length bound that max_tokens sets in the grammar: the grammar, "
                                   "not the model, wrote the field's required ending")
    if not isinstance(value, dict):
        return Reject("wrong_type", f"expected a JSON object, got {type(value).__name__}")
    out: dict[str, Any] = {}
    for name, spec in fields.items():
        if name not in value:
            return Reject("missing_field", f"no {name!r} in the output")
        coerced = _coerce(name, value[name], spec.type)
        if isinstance(coerced, Reject):
            return coerced
        out[name] = coerced
    return out


# -- free text ------------------------------------------------------------------------------

_BLANK_HEAD = re.compile(r"^(?:[ \t]*\n)+")
_WHOLE_FENCE = re.compile(r"^```[A-Za-z0-9_+-]*[ \t]*\n(.*?)\n?```$", re.DOTALL)


def _own_label(name: str) -> re.Pattern[str]:
    """A reply that opens with its own field's label ("Answer:", "**New question:**"):
    the label is the prompt's, not the field's."""
    words = re.escape(name.replace("_", " ")).replace(r"\ ", r"[ _]")
    return re.compile(rf"^\s*(?:\*\*)?(?:[A-Za-z]+ ){{0,2}}{words}(?:\*\*)?\s*:(?:\*\*)?[ \t]*\n?", re.IGNORECASE)


def parse_text(text: str, fields: Mapping[str, "OutputField"], finish_reason: str | None = None
               ) -> dict[str, Any] | Reject:
    """A free-text reply to a stage that writes one field: the reply is the field.

    What is taken off: surrounding whitespace, a code fence around the whole reply, and
    the field's own label at the very start ("Answer: ..."). A reply that is exactly a
    JSON object holding the field (a model that answers in JSON anyway) gives that value.
    Everything else stays, for the gates (synth/curation/filters.py) to judge: a reply that opens
    with `}` or repeats the prompt's `Question:` is junk they reject with a reason."""
    if len(fields) != 1:
        raise ValueError(f"free-text output writes one field; this stage writes {len(fields)}: {', '.join(fields)}")
    (name, spec), = fields.items()
    if len(text) > MAX_PARSE_CHARS:
        return Reject("too_long", f"{len(text)} characters, limit {MAX_PARSE_CHARS}")
    if finish_reason == "length":
        return Reject("truncated", f"hit max_tokens before the {name} ended ({len(text)} characters)")
    if finish_reason == LENGTH_BOUND:
        return Reject("truncated", "ran to the length bound the grammar set")
    stripped = _BLANK_HEAD.sub("", text.replace("\x00", "").rstrip())
    if not stripped.strip():
        return Reject("empty_output", "the model returned no text")
    if stripped.startswith("{") and stripped.endswith("}"):
        value = extract_json(stripped)
        if isinstance(value, dict) and set(value) == {name}:
            coerced = _coerce(name, value[name], spec.type)
            return coerced if isinstance(coerced, Reject) else {name: coerced}
    fenced = _WHOLE_FENCE.match(stripped.strip())
    if fenced:
        stripped = _BLANK_HEAD.sub("", fenced.group(1).rstrip())
    stripped = _BLANK_HEAD.sub("", _own_label(name).sub("", stripped, count=1).rstrip())
    if spec.type == "string":
        # a body of several lines keeps its indentation (a HumanEval solution is an indented
        # function body); one line is trimmed
        body = stripped if "\n" in stripped else stripped.strip()
        return {name: body} if body.strip() else Reject("empty_field", f"{name} is empty")
    coerced = _coerce(name, stripped, spec.type)
    return coerced if isinstance(coerced, Reject) else {name: coerced}
