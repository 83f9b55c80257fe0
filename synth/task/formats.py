"""Format constraints on a task's output fields: the field's spec (`OutputField`), the
JSON-schema fragment that carries them to a backend, and the check after parsing.

An output field may declare, besides its description:
- `type`: the JSON type, `string` (default), `integer` or `number`;
- `pattern`: a Python regular expression that must be found in the text (`re.search`;
  anchor it with `^` / `$`), e.g. `####[ ]*-?[0-9][0-9,]*$` for a GSM8K answer;
- `min_words` / `max_words`: bounds on the whitespace-separated words.

Where they go:
- `field_schema` puts the type and the pattern into the structured-output schema,
  the pattern as a whole-string JSON-schema pattern (`^[\\s\\S]*(...)$` around an
  unanchored one), which vLLM and OpenAI-style `json_schema` servers enforce;
- llama.cpp's grammar takes a narrower regex dialect and works on the JSON text as
  written: `grammar_schema` rewrites each pattern into that dialect (`\\d`, `\\s`, `\\w`,
  `.` and `[\\s\\S]` into character classes that keep the JSON string valid), and drops a
  pattern it cannot rewrite (the check after parsing still holds it);
- word bounds cannot be written as a schema: only the check holds them;
- `check_format` runs after parsing, as the `format` filter (synth/curation/filters.py): a miss
  is a `filtered` sample with the reason (`pattern_mismatch`, `too_few_words`,
  `too_many_words`).

>>> spec = OutputField(description="solution", pattern=r"####[ ]*-?[0-9]+$", max_words=50)
>>> check_format("answer", "2 + 3 = 5 #### 5", spec) is None
True
>>> str(check_format("answer", "The answer is 5.", spec))[:40]
'pattern_mismatch: answer does not match '
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from synth.reject import Reject

_WORD = re.compile(r"\S+")


class OutputField(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(min_length=1)
    type: Literal["string", "integer", "number"] = "string"
    pattern: str | None = Field(default=None, min_length=1)  # searched in the text (re.search)
    min_words: int | None = Field(default=None, ge=1)
    max_words: int | None = Field(default=None, ge=1)
    # the last line the pattern asks for, as a person writes it ('#### <number>'): what the
    # extraction turn asks a free-text reply for when it lacks it (default: the description)
    ending: str | None = Field(default=None, min_length=1)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern {value!r} is not a regular expression ({exc}); "
                                 r"write a Python regex, e.g. '####[ ]*-?[0-9]+$'") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "OutputField":
        if self.type != "string" and (self.pattern or self.min_words or self.max_words):
            raise ValueError(f"pattern, min_words and max_words apply to text: this field's type is {self.type}")
        if self.min_words and self.max_words and self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) must be <= max_words ({self.max_words})")
        return self

    @property
    def constrained(self) -> bool:
        return bool(self.pattern or self.min_words or self.max_words)

    @property
    def required_ending(self) -> bool:
        """The pattern is anchored at the end: the field must end in a set form (`#### 72`)."""
        return self.type == "string" and self.pattern is not None and _ends_anchored(self.pattern)

    def missing_ending(self, text: str) -> bool:
        return self.required_ending and not _compiled(self.pattern).search(text.rstrip())  # type: ignore[arg-type]

    def ending_line(self, reply: str) -> str | None:
        """The first line of an extraction reply that is the required ending on its own."""
        for line in reply.strip().splitlines():
            line = line.strip().strip("`*").strip()
            if line and _compiled(self.pattern).search(line):  # type: ignore[arg-type]
                return line
        return None


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def check_format(name: str, value: Any, spec: OutputField) -> Reject | None:
    """The first constraint of `spec` that `value` misses, as a Reject; None when it holds."""
    if spec.type != "string":
        return None
    text = str(value)
    if spec.pattern and not _compiled(spec.pattern).search(text):
        tail = text.strip()[-40:]
        return Reject("pattern_mismatch", f"{name} does not match {spec.pattern!r} (ends {tail!r})")
    words = count_words(text) if spec.min_words or spec.max_words else 0
    if spec.min_words and words < spec.min_words:
        return Reject("too_few_words", f"{name} has {words} words, minimum {spec.min_words}")
    if spec.max_words and words > spec.max_words:
        return Reject("too_many_words", f"{name} has {words} words, maximum {spec.max_words}")
    return None


def check_fields(fields: Mapping[str, Any], specs: Mapping[str, OutputField]) -> Reject | None:
    for name, value in fields.items():
        spec = specs.get(name)
        if spec is not None and spec.constrained:
            reject = check_format(name, value, spec)
            if reject is not None:
                return reject
    return None


# -- the schema ---------------------------------------------------------------------------


def _ends_anchored(pattern: str) -> bool:
    return pattern.endswith("$") and not pattern.endswith("\\$")


def whole_string_pattern(pattern: str) -> str:
    """The JSON-schema pattern that a string matches as a whole exactly when `re.search`
    finds `pattern` in it.

    >>> whole_string_pattern("####[ ]*[0-9]+$")
    '^[\\\\s\\\\S]*(####[ ]*[0-9]+)$'
    """
    core = pattern[1:] if pattern.startswith("^") else pattern
    head = "" if pattern.startswith("^") else r"[\s\S]*"
    tail = "" if _ends_anchored(core) else r"[\s\S]*"
    core = core[:-1] if _ends_anchored(core) else core
    return f"^{head}({core}){tail}$"


def field_schema(spec: OutputField) -> dict[str, Any]:
    if spec.type != "string":
        return {"type": spec.type, "description": spec.description}
    schema: dict[str, Any] = {"type": "string", "minLength": 1}
    if spec.pattern:
        schema["pattern"] = whole_string_pattern(spec.pattern)
    return schema


# -- llama.cpp's grammar dialect --------------------------------------------------------------

# In a JSON string as written: any character but a quote or a backslash, or an escape.
_JSON_CHAR = r'([^"\\]|\\.)'
_CLASS_ESCAPES = {"d": "0-9", "s": r" \t\n", "w": "A-Za-z0-9_"}
_OUTSIDE_ESCAPES = {"d": "[0-9]", "s": r"[ \t\n]", "w": "[A-Za-z0-9_]", "S": r'[^ \t\n"\\]'}
_PUNCTUATION = set(r".^$*+?()[]{}|\/-#:,=<>!&%'@~`;")


def _gbnf_class(body: str) -> str | None:
    """One character class body (between [ and ]) in the grammar's dialect, or None."""
    out, i = "", 0
    negated = body.startswith("^")
    if negated:
        body = body[1:]
    if body == r"\s\S" or body == r"\S\s":
        return None if negated else "ANY"
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in _CLASS_ESCAPES:
                out += _CLASS_ESCAPES[nxt]
            elif nxt in "tn":
                out += body[i:i + 2]
            elif nxt in _PUNCTUATION or nxt == "\\":
                out += f"\\x{ord(nxt):02X}"  # the grammar's own escapes differ from a regex's
            else:
                return None
            i += 2
        elif body[i] == '"':
            return None
        else:
            out += body[i]
            i += 1
    return f'[^{out}"\\\\]' if negated else f"[{out}]"


def gbnf_pattern(pattern: str, free_chars: int | None = None) -> str | None:
    """`pattern` (a whole-string pattern from `whole_string_pattern`) in the regex dialect
    llama.cpp's grammar converter accepts, matching the JSON string's text as written;
    None where it cannot be rewritten (lookarounds, `(?`, `\\b`, quotes).

    `free_chars` bounds each run of any-character (`[\\s\\S]*`): a grammar that lets a
    model write freely until it chooses to end with `#### N` lets a weak one run into
    max_tokens instead (SmolLM2-135M, GSM8K answers: 6 of 6 cut off and unparsable; with
    the run bounded to 400 characters 4 of 6 closed in the format)."""
    if not (pattern.startswith("^") and pattern.endswith("$")) or "(?" in pattern:
        return None
    out, i, body = "", 1, pattern[:-1]
    while i < len(body):
        c = body[i]
        if c == "[":
            end, j = None, i + 1
            while j < len(body):
                if body[j] == "\\":
                    j += 2
                    continue
                if body[j] == "]" and j > i + 1:
                    end = j
                    break
                j += 1
            if end is None:
                return None
            cls = _gbnf_class(body[i + 1:end])
            if cls is None:
                return None
            out += _JSON_CHAR if cls == "ANY" else cls
            i = end + 1
            if cls == "ANY" and free_chars is not None and body[i:i + 1] == "*":
                out += f"{{0,{free_chars}}}"
                i += 1
        elif c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in _OUTSIDE_ESCAPES:
                out += _OUTSIDE_ESCAPES[nxt]
            elif nxt in _PUNCTUATION or nxt == "\\":
                out += f"[\\x{ord(nxt):02X}]"
            else:
                return None
            i += 2
        elif c == ".":
            out += r'[^"\\\n\r]'
            i += 1
        elif c == '"' or c in "^$":
            return None
        else:
            out += c
            i += 1
    return f"^{out}$"


CHARS_PER_TOKEN = 2.5  # below the 3.5-4 of English text: the bounded run ends before max_tokens does


def grammar_schema(schema: dict[str, Any], max_tokens: int | None = None, patterns: bool = True) -> dict[str, Any]:
    """`schema` with every string `pattern` rewritten for llama.cpp's grammar, or dropped
    where it cannot be (the check after parsing still holds it). With `max_tokens`, the
    free text inside a pattern is bounded to what fits in that many tokens; with
    `patterns=False` every pattern is dropped (checked after parsing only)."""
    if not isinstance(schema, dict):
        return schema
    free = int(max_tokens * CHARS_PER_TOKEN) if max_tokens else None
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "pattern" and isinstance(value, str):
            rewritten = gbnf_pattern(value, free) if patterns else None
            if rewritten is not None:
                out[key] = rewritten
        elif isinstance(value, dict):
            if key == "properties":
                out[key] = {k: grammar_schema(v, max_tokens, patterns) if isinstance(v, dict) else v
                            for k, v in value.items()}
            else:
                out[key] = grammar_schema(value, max_tokens, patterns)
        else:
            out[key] = value
    return out


def ran_to_bound(schema: dict[str, Any] | None, text: str, max_tokens: int | None) -> str | None:
    """The first output field whose free text ran to the bound `grammar_schema` set on it
    (max_tokens x CHARS_PER_TOKEN characters): the grammar, not the model, then wrote the
    field's required ending, so `#### 9482690437953.2981` after a cut-off sentence. None
    when no field did (or `text` is not the JSON object the schema asks for).

    Measured on the demo (SmolLM2-135M, max_tokens 200, bound 500): 17 of its 19 accepted
    answers had exactly 500 characters before `####`; Qwen2.5-Coder-1.5B, 2 of 4."""
    if not max_tokens or not isinstance(schema, dict):
        return None
    bound = int(max_tokens * CHARS_PER_TOKEN)
    try:  # llama.cpp's grammar lets raw newlines into a string: not strict JSON, as parsing reads it too
        value, _ = json.JSONDecoder(strict=False).raw_decode(text.strip())
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    for name, spec in (schema.get("properties") or {}).items():
        pattern = spec.get("pattern") if isinstance(spec, dict) else None
        field = value.get(name)
        if not isinstance(pattern, str) or not isinstance(field, str) or _FREE_RUN not in pattern:
            continue
        runs = pattern.split(_FREE_RUN)
        named = "".join(part + (f"(?P<run{i}>{_FREE_RUN})" if i < len(runs) - 1 else "") for i, part in enumerate(runs))
        try:
            match = re.match(named, field)
        except re.error:
            continue
        if match and any(_json_units(run) >= bound for run in match.groupdict().values() if run is not None):
            return name
    return None


_FREE_RUN = r"[\s\S]*"


def _json_units(text: str) -> int:
    """Characters of `text` as llama.cpp's grammar counts them in a JSON string: an escape
    (`\\n`, `\\"`) is one."""
    return len(text) + sum(4 for c in text if ord(c) < 0x20 and c not in "\b\f\n\r\t")
