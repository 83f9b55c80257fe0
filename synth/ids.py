"""Every hash and derived seed the factory makes, in one place.

Ids are deterministic: the same inputs always give the same id, which is what lets a
rerun find what it already wrote. Content hashes compare texts after normalisation
(case, punctuation and whitespace folded), so "What is 2+2?" and "what is 2 + 2" hash
alike for exact deduplication.

>>> stable_id("run", 3, "question")
'83a9af55429cdbfaa4bf'
>>> content_hash({"question": "What is 2+2?"}) == content_hash({"question": "what is 2 + 2"})
True
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any, Iterable, Mapping


def stable_id(*parts: Any, length: int = 20) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def stable_seed(*parts: Any) -> int:
    return int(stable_id(*parts, length=8), 16) & 0x7FFFFFFF


def text_hash(text: str, length: int = 16) -> str:
    return hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()[:length]


def data_hash(data: Any, length: int = 16) -> str:
    """A hash of JSON-able data whatever its key order (tree ids, snapshot tags)."""
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def prompt_hash(messages: Iterable[Mapping[str, str]]) -> str:
    """The hash of what a request sent (its chat messages), as the requests table stores it."""
    return text_hash(json.dumps([dict(m) for m in messages], sort_keys=True))


def normalize_for_hash(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", unicodedata.normalize("NFKC", text).lower()).split())


def content_hash(fields: Mapping[str, Any]) -> str:
    """The exact-duplicate key of a sample: its fields' normalised text, in field-name order."""
    return text_hash(normalize_for_hash("\n".join(str(fields[n]) for n in sorted(fields))))
