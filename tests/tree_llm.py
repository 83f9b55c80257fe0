"""A fake LLM for tree tests: it plays each TreeSynth stage from the prompt it is given.

It reads the stage from the request's JSON schema and the node from the path lines of
the prompt (`- dimension: value`), so a test can make chosen nodes answer badly.
"""

from __future__ import annotations

import json
import re
from collections import Counter

from synth.backends.base import SamplingSettings
from synth.task.task import Task

TASK = Task(name="gsm", description="Grade school math word problems with 2 to 8 steps.",
            output_fields={"question": {"description": "the problem"}, "answer": {"description": "the solution"}})
SAMPLING = SamplingSettings(max_tokens=64)
DIMS = ["setting", "operation", "steps", "units"]
VALUES = {"setting": ["farm", "city", "school"], "operation": ["sums", "ratios", "percent"],
          "steps": ["2-3", "4-5", "6-8"], "units": ["money", "time", "length"]}


def stage_of(request) -> str:
    props = request.json_schema["properties"]
    return "pivots" if "samples" in props else "dimension" if "labels" in props else "expand"


def path_of(request) -> tuple[tuple[str, str], ...]:
    return tuple(re.findall(r"^- ([^:\n\"]+): (.+)$", request.messages[0]["content"], re.M))


class LLM:
    """A well-behaved fake LLM; `bad(stage, path, attempt)` may return a bad answer instead."""

    def __init__(self, bad=None, values=VALUES, extra=None):
        self.bad, self.values, self.extra = bad, values, extra or {}
        self.seen: Counter = Counter()

    def __call__(self, request):
        stage, path = stage_of(request), path_of(request)
        attempt = self.seen[(stage, path)]
        self.seen[(stage, path)] += 1
        if self.bad is not None:
            answer = self.bad(stage, path, attempt)
            if answer is not None:
                return answer
        dim = DIMS[len(path)]
        if stage == "pivots":
            n = request.json_schema["properties"]["samples"]["minItems"]
            return json.dumps({"samples": [f"problem {i} in {path}" for i in range(n)]})
        if stage == "dimension":
            n = request.json_schema["properties"]["labels"]["minItems"]
            return json.dumps({"dimension": dim, "labels": [self.values[dim][i % 2] for i in range(n)]})
        known = re.search(r"^Values so far: (.*)$", request.messages[0]["content"], re.M).group(1).split(", ")
        new = [v for v in self.values[DIMS[len(path)]] if v not in known] + self.extra.get(dim, [])
        return json.dumps({"new_values": new, "answer": "more_complete" if new else "nothing_to_add"})
