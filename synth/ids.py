"""Deterministic ids and seeds: the same inputs always give the same id, so a rerun
finds what it already wrote.

>>> stable_id("run", 3, "question")
'83a9af55429cdbfaa4bf'
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def stable_id(*parts: Any, length: int = 20) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def stable_seed(*parts: Any) -> int:
    return int(stable_id(*parts, length=8), 16) & 0x7FFFFFFF


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()[:16]
