"""TreeSynth partitioning trees: build one with an LLM, show it, move it through YAML.

A tree splits the task's data space into leaves whose paths of `dimension=value`
constraints are mutually exclusive (TreeSynth, Wang et al. 2025, arXiv 2503.17195).
`build_tree` grows it breadth-first: for every node of a level it asks, in ONE batched
backend call per stage, for (1) pivot samples inside the node's subspace, (2) one new
dimension that separates the pivots, with every pivot's value on it (one label per
pivot: see `_attributes` for why not the paper's index lists), and (3) the rest of that
dimension's values. Only the nodes whose output failed
validation are asked again (batched, at most `max_retries` times), so a tree of depth
d costs about 3 x d sequential rounds whatever its width.

Rules the model's answers do not decide:
- more values than `infinite_threshold`: the dimension is "infinite": ONE child holds
  the whole list (`value_list`, path value `*`) and a value is drawn per sample
  (`leaf_constraints`);
- more than `max_values` (but not infinite): the `max_values` values with the most
  pivots are kept (ties: first pivot, then expansion order);
- `max_leaves` is never exceeded: nodes are split in frontier order while their
  children fit; a node whose values do not all fit keeps as many as fit (at least 2),
  the rest of the frontier becomes leaves with reason `max_leaves`;
- a node that cannot be split (no pivots, no valid dimension after the retries)
  becomes a leaf and its reason says why; a failed expansion keeps the classified values.

Pivots: ONE request per node asks for all N (a JSON list). Measured on SmolLM2-135M
(benchmarks/tree_build.py --embedded, n=4): about 130 tokens a node, against 590 for N
one-pivot requests (5 to 30 x the wall time on a shared CPU), which gave more usable
nodes (4/4 against 2/4); a retry of the failed nodes covers that more cheaply.

Children are listed in a canonical order (by value), and node ids are a hash of the
path, so a tree loaded from the catalog or from YAML has the same ids and order.

Leaves out: storage (storage/trees.py), generation inside the leaves (the plan), and
any network or engine: the backend is passed in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import yaml

from synth.prompts import render, template_hash
from synth.types import GenerationRequest, GenerationResult, Sampling

ANY = "*"  # the path value of an infinite node: one of its value_list is drawn per sample
STAGES = ("pivots", "dimension", "expand")
TEMPLATES = {stage: f"tree/{stage}.jinja2" for stage in STAGES}
EXPAND_ANSWERS = ("nothing_to_add", "more_complete", "more_open_ended")
MAX_LABEL_CHARS = 80  # dimension names and values are labels, not sentences
MAX_PIVOT_CHARS = 600
ALGORITHM_VERSION = 2  # part of the tree id: a change of the rules or schemas makes new trees (2: dimension names start with a letter)
SETTINGS_NOT_IN_KEY = {"file", "leaf_weights", "enabled"}  # they do not change what gets built


class TreeError(ValueError):
    """A tree (usually an edited YAML file) that is not valid; the message names the node."""


class _Invalid(Exception):
    """One model answer failed validation; the message is the reason recorded."""


# -- data types -----------------------------------------------------------------------


@dataclass(frozen=True)
class TreeNode:
    node_id: str
    parent_id: str | None
    depth: int
    dimension: str | None  # the dimension whose value this node fixes (None at the root)
    value: str | None  # that value (None at the root and on infinite nodes)
    value_list: list[str] | None  # infinite nodes: the whole list, one drawn per sample
    path: list[tuple[str, str]]  # (dimension, value) from the root; value ANY on infinite nodes
    is_leaf: bool
    infinite: bool = False
    status: str = "leaf"  # split / leaf
    reason: str | None = None  # leaves: why not split further; split nodes: a note, if any
    # every infinite node on the path (this one included): dimension -> its value list
    any_of: dict[str, list[str]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return leaf_label(self)


@dataclass(frozen=True)
class Tree:
    tree_id: str
    nodes: list[TreeNode]  # breadth-first, children in canonical order
    settings: dict[str, Any]
    model: str
    rounds: int = 0  # sequential backend calls it cost
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    source: str = "built"  # built / imported
    task_name: str = ""
    status: str = "complete"
    # per stage: requests, invalid answers, retries, nodes that failed for good. Build-time
    # only (not stored): the requests table holds the same facts row by row.
    stats: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def root(self) -> TreeNode:
        return self.nodes[0]

    def node(self, node_id: str) -> TreeNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"tree {self.tree_id} has no node {node_id}")

    def children(self, node_id: str) -> list[TreeNode]:
        return [n for n in self.nodes if n.parent_id == node_id]

    def leaves(self) -> list[TreeNode]:
        return [n for n in self.nodes if n.is_leaf]

    @property
    def depth(self) -> int:
        return max(n.depth for n in self.nodes)


def node_id_for(path: Sequence[Sequence[str]]) -> str:
    """Same path, same id: in a built tree, in the catalog and after a YAML round trip."""
    blob = json.dumps([list(p) for p in path], ensure_ascii=False)
    return "n" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def leaf_label(leaf: TreeNode) -> str:
    """`setting=farm / operation=ratios`; `root` for a tree that never split."""
    return " / ".join(f"{d}={v}" for d, v in leaf.path) or "root"


def leaf_constraints(leaf: TreeNode, rng_or_seed: random.Random | int | str) -> list[tuple[str, str]]:
    """The leaf's path with a value drawn for every infinite node on it.

    The same seed gives the same draw: `leaf_constraints(leaf, 7)` is stable across runs.
    """
    rng = rng_or_seed if isinstance(rng_or_seed, random.Random) else random.Random(f"{rng_or_seed}:{leaf.node_id}")
    out = []
    for dimension, value in leaf.path:
        if value == ANY:
            choices = leaf.any_of.get(dimension)
            if not choices:
                raise TreeError(f"node {leaf_label(leaf)}: infinite dimension {dimension!r} has no value list")
            value = rng.choice(choices)
        out.append((dimension, value))
    return out


# -- identity -------------------------------------------------------------------------


def _hash(data: Any, n: int = 16) -> str:
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def _settings_key(settings: Any) -> dict[str, Any]:
    data = settings.model_dump(mode="json") if hasattr(settings, "model_dump") else dict(settings)
    return {k: v for k, v in data.items() if k not in SETTINGS_NOT_IN_KEY}


def _question_field(task: Any) -> tuple[str, str]:
    name = task.question
    return name, task.output_fields[name].description


def tree_id_for(task: Any, settings: Any, model: str) -> str:
    """Hash of what makes the tree: task, tree settings (seed included), model, prompts."""
    return "t" + _hash({
        "task": [task.name, task.description, *_question_field(task)],
        "tree": _settings_key(settings),
        "model": model,
        "templates": {stage: template_hash(name) for stage, name in TEMPLATES.items()},
        "algorithm": ALGORITHM_VERSION,
    })


# -- parsing model answers (never raises anything but _Invalid) ----------------------

_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")


def _load_json(result: GenerationResult) -> Any:
    if result.error:
        raise _Invalid(f"backend error: {result.error}")
    text = (result.text or "").strip()
    if not text:
        raise _Invalid("empty output")
    text = _FENCE.sub("", text).strip()  # servers without schema support like code fences
    try:
        return json.loads(text, strict=False)  # grammar strings may hold raw newlines
    except (json.JSONDecodeError, RecursionError):
        pass
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            return json.loads(text[start:end + 1], strict=False)
        except (json.JSONDecodeError, RecursionError):
            pass
    cut = " (cut at max_tokens: raise sampling.max_tokens)" if result.finish_reason == "length" else ""
    raise _Invalid(f"malformed JSON{cut}: {text[:80]!r}")


_NUMBERING = re.compile(r"^\(?\d{1,2}[.):]\s+")  # "1. ", "2) ": list numbering copied from the prompt


def _clean(text: str) -> str:
    return _NUMBERING.sub("", " ".join(text.split()))


def _label(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"{what} is {type(value).__name__}, not a string")
    value = _clean(value)
    if not value or value == ANY:
        raise _Invalid(f"{what} is empty")
    if len(value) > MAX_LABEL_CHARS:
        raise _Invalid(f"{what} is over {MAX_LABEL_CHARS} characters")
    return value


def parse_pivots(result: GenerationResult, n: int) -> list[str]:
    data = _load_json(result)
    if not isinstance(data, dict) or not isinstance(data.get("samples"), list):
        raise _Invalid('expected {"samples": [strings]}')
    seen, pivots = set(), []
    for item in data["samples"]:
        if isinstance(item, str):
            text = _clean(item)[:MAX_PIVOT_CHARS]
            if text and text.casefold() not in seen:
                seen.add(text.casefold())
                pivots.append(text)
    if len(pivots) < 2:
        raise _Invalid(f"{len(pivots)} distinct non-empty samples; need at least 2")
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
            raise _Invalid(f"{len(labels)} labels for {len(pivots)} pivots; need one per pivot")
        out: dict[Any, list[int]] = {}
        spelling: dict[str, str] = {}  # "Farm" and "farm" are one value: the first spelling wins
        for i, label in enumerate(labels, 1):
            key = _label(label, f"label {i}")
            if len(key) >= 20 and _clean(pivots[i - 1]).casefold().startswith(key.casefold()):
                raise _Invalid(f"label {i} copies its pivot instead of naming a value")
            out.setdefault(spelling.setdefault(key.casefold(), key), []).append(i)
        return out
    if isinstance(data.get("attributes"), dict):
        return data["attributes"]
    raise _Invalid('expected {"dimension": string, "labels": [one value per pivot]}')


def parse_dimension(result: GenerationResult, pivots: Sequence[str], excluded: Iterable[str],
                    max_values: int) -> tuple[str, list[str]]:
    """-> (dimension, values ordered by how many pivots each got)."""
    n_pivots = len(pivots)
    data = _load_json(result)
    if not isinstance(data, dict) or "dimension" not in data:
        raise _Invalid('expected {"dimension": string, "labels": [one value per pivot]}')
    dimension = _label(data["dimension"], "dimension")
    if not any(ch.isalpha() for ch in dimension):
        raise _Invalid(f"dimension {dimension!r} names nothing (no letters)")
    if dimension.casefold() in {d.casefold() for d in excluded}:
        raise _Invalid(f"dimension {dimension!r} is already on the path")
    seen: dict[int, str] = {}
    ranked = []
    names: set[str] = set()
    for position, (raw_value, indices) in enumerate(_attributes(data, pivots).items()):
        value = _label(raw_value, "a value")
        if value.casefold() in names:
            raise _Invalid(f"value {value!r} is given twice")
        if value.casefold() == dimension.casefold():
            raise _Invalid(f"value {value!r} repeats the dimension's name")
        names.add(value.casefold())
        if not isinstance(indices, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in indices):
            raise _Invalid(f"value {value!r}: pivots must be a list of whole numbers")
        for i in indices:
            if not 1 <= i <= n_pivots:
                raise _Invalid(f"value {value!r}: pivot {i} does not exist (1..{n_pivots})")
            if i in seen:
                raise _Invalid(f"pivot {i} is under both {seen[i]!r} and {value!r}")
            seen[i] = value
        ranked.append((-len(indices), min(indices, default=n_pivots + 1), position, value))
    missing = sorted(set(range(1, n_pivots + 1)) - set(seen))
    if missing:
        raise _Invalid(f"pivots {', '.join(map(str, missing))} are under no value")
    if not 2 <= len(ranked) <= max_values:
        raise _Invalid(f"{len(ranked)} distinct values; need 2 to {max_values}")
    return dimension, [value for *_, value in sorted(ranked)]


def parse_expansion(result: GenerationResult, known: Sequence[str]) -> tuple[str, list[str]]:
    """-> (answer kind, new values not already known)."""
    data = _load_json(result)
    if not isinstance(data, dict) or data.get("answer") not in EXPAND_ANSWERS:
        raise _Invalid(f'expected {{"new_values": [strings], "answer": one of {", ".join(EXPAND_ANSWERS)}}}')
    answer = data["answer"]
    raw = data.get("new_values", [])
    if not isinstance(raw, list):
        raise _Invalid("new_values is not a list")
    if answer == "nothing_to_add":
        return answer, []
    seen = {v.casefold() for v in known}
    new = []
    for item in raw:
        try:
            value = _label(item, "a new value")
        except _Invalid:
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


# -- building ----------------------------------------------------------------------------


@dataclass
class _Work:
    """A frontier node while its level is being built."""

    node: TreeNode
    constraints: list[tuple[str, str]]  # the path with infinite values drawn for the prompts
    pivots: list[str] = field(default_factory=list)
    dimension: str | None = None
    values: list[str] = field(default_factory=list)
    failure: str | None = None
    note: str | None = None


RequestSink = Callable[[list[dict[str, Any]]], None]


class _Builder:
    def __init__(self, task: Any, settings: Any, backend: Any, sampling: Any, tree_id: str,
                 on_requests: RequestSink | None) -> None:
        self.task, self.s, self.backend, self.tree_id = task, settings, backend, tree_id
        self.sampling = {"temperature": sampling.temperature, "top_p": sampling.top_p,
                         "max_tokens": sampling.max_tokens}
        self.on_requests = on_requests
        self.rounds = self.requests = self.prompt_tokens = self.completion_tokens = 0
        self.stats = {stage: {"nodes": 0, "requests": 0, "invalid": 0, "retries": 0, "failed_nodes": 0}
                      for stage in STAGES}

    def _seed(self, *parts: Any) -> int:
        return int(_hash([self.s.seed, self.tree_id, *parts], 8), 16) & 0x7FFFFFFF

    def _call(self, stage: str, items: list[tuple[_Work, dict[str, Any], dict[str, Any]]],
              attempt: int) -> tuple[list[GenerationResult], list[dict[str, Any]]]:
        """One batched backend call (one round) -> its results and their request rows."""
        requests, rows = [], []
        template = TEMPLATES[stage]
        t_hash = template_hash(template)
        for work, variables, schema in items:
            content = render(template, variables)
            messages = ({"role": "user", "content": content},)
            request_id = "r" + _hash([self.tree_id, work.node.node_id, stage, attempt])
            sampling = Sampling(**self.sampling, seed=self._seed(work.node.node_id, stage, attempt))
            requests.append(GenerationRequest(key=request_id, messages=messages, sampling=sampling,
                                              json_schema=schema))
            rows.append({"request_id": request_id, "run_id": None, "tree_id": self.tree_id, "stage": stage,
                         "leaf_id": work.node.node_id,  # tree requests: the node it was asked for
                         "template": template, "template_hash": t_hash,
                         "prompt_hash": _hash(list(messages)), "sampling": dataclasses.asdict(sampling)})
        started = time.perf_counter()
        results = list(self.backend.generate(requests))
        if len(results) != len(requests):
            raise RuntimeError(f"backend {self.backend.name} returned {len(results)} results for "
                               f"{len(requests)} requests; a backend must answer every request in order")
        wall = time.perf_counter() - started
        self.rounds += 1
        self.requests += len(requests)
        self.stats[stage]["requests"] += len(requests)
        if attempt:
            self.stats[stage]["retries"] += len(requests)
        for row, result in zip(rows, results):
            self.prompt_tokens += result.prompt_tokens
            self.completion_tokens += result.completion_tokens
            row.update(raw_text=result.text, finish_reason=result.finish_reason,
                       prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                       latency_s=result.latency_s or wall / len(requests), error=result.error)
        return results, rows

    def stage(self, stage: str, works: list[_Work], variables: Callable[[_Work], dict[str, Any]],
              schema: Callable[[_Work], dict[str, Any]], parse: Callable[[_Work, GenerationResult], None]) -> None:
        """Run one stage for `works`; retry only the ones whose answer failed; mark the rest failed."""
        self.stats[stage]["nodes"] += len(works)
        pending = list(works)
        reasons: dict[str, str] = {}
        for attempt in range(self.s.max_retries + 1):
            if not pending:
                break
            results, rows = self._call(stage, [(w, variables(w), schema(w)) for w in pending], attempt)
            failed = []
            for work, result, row in zip(pending, results, rows):
                try:
                    parse(work, result)
                except _Invalid as exc:
                    reasons[work.node.node_id] = str(exc)
                    self.stats[stage]["invalid"] += 1
                    if row["error"] is None:  # backend errors are already there
                        row["error"] = f"invalid: {exc}"
                    failed.append(work)
            if self.on_requests is not None:
                self.on_requests(rows)
            pending = failed
        for work in pending:
            self.stats[stage]["failed_nodes"] += 1
            work.failure = f"{stage}: {reasons[work.node.node_id]} (after {self.s.max_retries + 1} tries)"


def _vars_common(task: Any, work: _Work) -> dict[str, Any]:
    return {"task_description": task.description, "path": [list(p) for p in work.constraints]}


def build_tree(task: Any, settings: Any, backend: Any, sampling: Any,
               on_requests: RequestSink | None = None) -> Tree:
    """Grow a tree breadth-first; every stage of a level is one batched backend call.

    `settings` is a `synth.recipe.TreeSettings`, `sampling` anything with temperature,
    top_p and max_tokens. `on_requests(rows)` gets the request rows of every batch as soon
    as it returns, ready for the catalog's `requests` table.
    """
    s = settings
    tree_id = tree_id_for(task, s, backend.model)
    b = _Builder(task, s, backend, sampling, tree_id, on_requests)
    field_name, field_description = _question_field(task)
    root = TreeNode(node_id_for([]), None, 0, None, None, None, [], is_leaf=True)
    done: list[TreeNode] = []  # final nodes, breadth-first
    frontier = [root]
    finished_leaves = 0
    while frontier:
        depth = frontier[0].depth
        if depth >= s.max_depth:
            done += [dataclasses.replace(n, reason="max_depth") for n in frontier]
            break
        room = s.max_leaves - finished_leaves - len(frontier)  # leaves we may still add
        # A split adds at least one leaf unless it is infinite: ask for no more nodes than can fit.
        tried = [_Work(n, leaf_constraints(n, s.seed)) for n in frontier[:max(room, 0)]]

        def pivots_vars(w: _Work) -> dict[str, Any]:
            return {**_vars_common(task, w), "field_name": field_name, "field_description": field_description,
                    "n": s.pivots_per_node}

        def parse_p(w: _Work, r: GenerationResult) -> None:
            w.pivots = parse_pivots(r, s.pivots_per_node)

        b.stage("pivots", tried, pivots_vars, lambda w: pivots_schema(s.pivots_per_node), parse_p)

        with_pivots = [w for w in tried if w.failure is None]

        def dim_vars(w: _Work) -> dict[str, Any]:
            return {**_vars_common(task, w), "pivots": w.pivots, "excluded": [d for d, _ in w.node.path],
                    "max_values": s.max_values}

        def parse_d(w: _Work, r: GenerationResult) -> None:
            w.dimension, w.values = parse_dimension(r, w.pivots, [d for d, _ in w.node.path], s.max_values)

        b.stage("dimension", with_pivots, dim_vars, lambda w: dimension_schema(len(w.pivots)), parse_d)

        classified = [w for w in with_pivots if w.failure is None]

        def exp_vars(w: _Work) -> dict[str, Any]:
            return {**_vars_common(task, w), "dimension": w.dimension, "values": w.values,
                    "infinite_threshold": s.infinite_threshold}

        def parse_e(w: _Work, r: GenerationResult) -> None:
            _, new = parse_expansion(r, w.values)
            w.values = w.values + new

        b.stage("expand", classified, exp_vars, lambda w: expand_schema(s.infinite_threshold), parse_e)
        for w in classified:
            if w.failure is not None:  # the classification stands; only the completion failed
                w.note, w.failure = f"kept the classified values; {w.failure}", None

        next_frontier: list[TreeNode] = []
        added = 0
        by_id = {w.node.node_id: w for w in tried}
        for node in frontier:
            w = by_id.get(node.node_id)
            if w is None:
                done.append(dataclasses.replace(node, reason="max_leaves"))
                continue
            if w.failure is not None:
                done.append(dataclasses.replace(node, reason=f"unsplittable: {w.failure}"))
                continue
            values, notes = list(w.values), [w.note] if w.note else []
            infinite = len(values) > s.infinite_threshold
            if not infinite:
                if len(values) > s.max_values:
                    notes.append(f"kept {s.max_values} of {len(values)} values (max_values)")
                    values = values[:s.max_values]
                fit = s.max_leaves - finished_leaves - len(frontier) - added + 1
                if fit < 2:
                    done.append(dataclasses.replace(node, reason="max_leaves"))
                    continue
                if len(values) > fit:
                    notes.append(f"kept {fit} of {len(values)} values (max_leaves)")
                    values = values[:fit]
                added += len(values) - 1
            done.append(dataclasses.replace(node, is_leaf=False, status="split",
                                            reason="; ".join(notes) or None))
            next_frontier += _children(node, w.dimension, values, infinite)
        finished_leaves += sum(1 for n in done if n.is_leaf and n.depth == depth)
        frontier = next_frontier

    settings_out = {**_settings_key(s), "sampling": b.sampling}
    return Tree(tree_id=tree_id, nodes=_ordered(done), settings=settings_out, model=backend.model,
                rounds=b.rounds, requests=b.requests, prompt_tokens=b.prompt_tokens,
                completion_tokens=b.completion_tokens, source="built", task_name=task.name, stats=b.stats)


def _children(node: TreeNode, dimension: str, values: list[str], infinite: bool) -> list[TreeNode]:
    if infinite:
        path = [*node.path, (dimension, ANY)]
        return [TreeNode(node_id_for(path), node.node_id, node.depth + 1, dimension, None, list(values), path,
                         is_leaf=True, infinite=True, any_of={**node.any_of, dimension: list(values)})]
    out = []
    for value in sorted(values, key=lambda v: (v.casefold(), v)):
        path = [*node.path, (dimension, value)]
        out.append(TreeNode(node_id_for(path), node.node_id, node.depth + 1, dimension, value, None, path,
                            is_leaf=True, any_of=dict(node.any_of)))
    return out


def _sibling_key(node: TreeNode) -> tuple[str, str]:
    value = node.value if node.value is not None else ANY
    return (value.casefold(), value)


def _ordered(nodes: list[TreeNode]) -> list[TreeNode]:
    """Breadth-first, children by value: the one order every source of a tree agrees on."""
    kids: dict[str | None, list[TreeNode]] = {}
    for node in nodes:
        kids.setdefault(node.parent_id, []).append(node)
    out, queue = [], sorted(kids.get(None, []), key=_sibling_key)
    while queue:
        out += queue
        queue = [c for n in queue for c in sorted(kids.get(n.node_id, []), key=_sibling_key)]
    if len(out) != len(nodes):
        raise TreeError(f"{len(nodes) - len(out)} node(s) are not reachable from the root")
    return out


def assemble(tree_id: str, nodes: list[TreeNode], **fields: Any) -> Tree:
    """A Tree from nodes in any order (the catalog's rows): canonical order, any_of rebuilt."""
    ordered = _ordered(nodes)
    fixed: dict[str, TreeNode] = {}
    for node in ordered:
        inherited = dict(fixed[node.parent_id].any_of) if node.parent_id else {}
        if node.infinite and node.dimension and node.value_list:
            inherited[node.dimension] = list(node.value_list)
        fixed[node.node_id] = dataclasses.replace(node, any_of=inherited)
    return Tree(tree_id=tree_id, nodes=[fixed[n.node_id] for n in ordered], **fields)


# -- showing ------------------------------------------------------------------------------


def _node_text(node: TreeNode) -> str:
    if node.parent_id is None:
        return "root"
    if node.infinite:
        shown = ", ".join((node.value_list or [])[:4])
        more = ", ..." if len(node.value_list or []) > 4 else ""
        return f"{node.dimension}=* (any of {len(node.value_list or [])}: {shown}{more})"
    return f"{node.dimension}={node.value}"


def render_tree(tree: Tree, counts: dict[str, int] | None = None) -> str:
    """The tree as indented lines; leaf sample counts in [brackets] when `counts` is given."""
    leaves = tree.leaves()
    head = (f"tree {tree.tree_id} ({tree.source}, model {tree.model}): {len(leaves)} leaves, depth {tree.depth}, "
            f"{tree.rounds} rounds, {tree.requests} requests, {tree.prompt_tokens + tree.completion_tokens} tokens")
    lines = [head]
    kids: dict[str | None, list[TreeNode]] = {}
    for node in tree.nodes:
        kids.setdefault(node.parent_id, []).append(node)

    def walk(node: TreeNode, prefix: str, tail: str) -> None:
        text = tail + _node_text(node)
        if node.is_leaf:
            if counts is not None:
                text += f"  [{counts.get(node.node_id, 0)}]"
            if node.reason and node.reason != "max_depth":
                text += f"  ({node.reason})"
        elif node.reason:
            text += f"  (note: {node.reason})"
        lines.append(text)
        children = kids.get(node.node_id, [])
        for i, child in enumerate(children):
            last = i == len(children) - 1
            walk(child, prefix + ("   " if last else "│  "), prefix + ("└─ " if last else "├─ "))

    walk(tree.root, "", "")
    if counts is not None:
        total = sum(counts.get(leaf.node_id, 0) for leaf in leaves)
        lines.append(f"{total} samples over {len(leaves)} leaves")
    return "\n".join(lines)


# -- YAML ---------------------------------------------------------------------------------

YAML_HEADER = """\
# A TreeSynth partitioning tree. Edit it, then `synth tree import FILE` (or name it in a
# recipe's tree.file). Each node splits on one dimension (`split`); each child fixes one
# value of it. To prune, delete a child, or delete a node's `split` and `children`; to
# rename, change a `value`; to add, add `- value: NEW` under `children`. A child with
# `any_of: [...]` instead of `value` is infinite: one value is drawn per sample.
"""
_TOP_KEYS = {"tree_id", "source", "task", "model", "settings", "root"}
_NODE_KEYS = {"value", "any_of", "split", "children", "reason"}


class _Dumper(yaml.SafeDumper):
    """Lists of values on one line (`any_of: [a, b, c]`), everything else in blocks."""


_Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=all(isinstance(x, str) for x in data)))


def tree_to_yaml(tree: Tree) -> str:
    """The tree for a person to read and edit; `reason: max_depth`, the usual, is left out."""
    kids: dict[str | None, list[TreeNode]] = {}
    for node in tree.nodes:
        kids.setdefault(node.parent_id, []).append(node)

    def out(node: TreeNode) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if node.parent_id is not None:
            if node.infinite:
                data["any_of"] = list(node.value_list or [])
            else:
                data["value"] = node.value
        children = kids.get(node.node_id, [])
        if children:
            data["split"] = children[0].dimension
            data["children"] = [out(c) for c in children]
        if node.reason and node.reason != "max_depth":
            data["reason"] = node.reason
        return data

    doc = {"tree_id": tree.tree_id, "source": tree.source, "task": tree.task_name, "model": tree.model,
           "settings": tree.settings, "root": out(tree.root)}
    return YAML_HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def _yaml_label(value: Any, where: str, what: str) -> str:
    if isinstance(value, bool) or value is None:
        raise TreeError(f"{where}: {what} is {value!r}; YAML reads yes/no/true/false/null as such: "
                        "quote it, e.g. \"yes\"")
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or value.strip() == ANY:
        raise TreeError(f"{where}: {what} must be a non-empty text other than {ANY!r}, got {value!r}")
    return " ".join(value.split())


def tree_from_yaml(text: str) -> Tree:
    """Read a tree from `tree_to_yaml`'s format, possibly edited by a person.

    The result has source 'imported' and an id hashed from its content (task and
    structure), so importing the same file twice gives the same tree.
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TreeError(f"not readable YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(doc, dict) or "root" not in doc:
        raise TreeError("a tree file is a mapping with a `root:` node (see `synth tree export`)")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise TreeError(f"unknown top-level key(s) {', '.join(sorted(map(str, unknown)))}: "
                        f"use only {', '.join(sorted(_TOP_KEYS))}")
    settings = doc.get("settings") or {}
    if not isinstance(settings, dict):
        raise TreeError("settings: must be a mapping (or left out)")
    task_name = str(doc.get("task") or "")
    nodes: list[TreeNode] = []

    def walk(data: Any, parent: TreeNode | None, dimension: str | None, where: str) -> None:
        if not isinstance(data, dict):
            raise TreeError(f"{where}: a node is a mapping (value/any_of, split, children, reason)")
        unknown = set(data) - _NODE_KEYS
        if unknown:
            raise TreeError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                            f"a node has only {', '.join(sorted(_NODE_KEYS))}")
        if parent is None:
            if "value" in data or "any_of" in data:
                raise TreeError(f"{where}: the root fixes no value: remove `value`/`any_of` from it")
            path: list[tuple[str, str]] = []
            node = TreeNode(node_id_for(path), None, 0, None, None, None, path, is_leaf=True)
        elif ("value" in data) == ("any_of" in data):
            raise TreeError(f"{where}: give a child exactly one of `value: TEXT` or `any_of: [TEXT, ...]`")
        elif "any_of" in data:
            raw = data["any_of"]
            if not isinstance(raw, list):
                raise TreeError(f"{where}: any_of must be a list of values")
            values = [_yaml_label(v, where, "an any_of value") for v in raw]
            if len({v.casefold() for v in values}) != len(values) or len(values) < 2:
                raise TreeError(f"{where}: any_of needs at least 2 distinct values")
            path = [*parent.path, (dimension, ANY)]
            node = TreeNode(node_id_for(path), parent.node_id, parent.depth + 1, dimension, None, values, path,
                            is_leaf=True, infinite=True)
        else:
            value = _yaml_label(data["value"], where, "value")
            path = [*parent.path, (dimension, value)]
            node = TreeNode(node_id_for(path), parent.node_id, parent.depth + 1, dimension, value, None, path,
                            is_leaf=True)
        here = "root" if parent is None else f"{where.rsplit(' > ', 1)[0]} > {_node_text(node)}"
        reason = data.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise TreeError(f"{here}: reason must be a text")
        split, children = data.get("split"), data.get("children")
        if (split is None) != (children is None):
            raise TreeError(f"{here}: a split node needs both `split: DIMENSION` and `children:`; "
                            "to make it a leaf remove both")
        if children is not None:
            new_dim = _yaml_label(split, here, "split")
            if new_dim.casefold() in {d.casefold() for d, _ in node.path}:
                raise TreeError(f"{here}: dimension {new_dim!r} is already on the path; split on another one")
            if not isinstance(children, list) or not children:
                raise TreeError(f"{here}: children must be a non-empty list; to make it a leaf remove "
                                "`split` and `children`")
            parent_node = dataclasses.replace(node, is_leaf=False, status="split", reason=reason)
            nodes.append(parent_node)
            seen: set[str] = set()
            for i, child in enumerate(children):
                at = len(nodes)
                walk(child, parent_node, new_dim, f"{here} > children[{i + 1}]")
                made = nodes[at]
                key = (made.value or ANY).casefold()
                if key in seen:
                    raise TreeError(f"{here} > children[{i + 1}]: value {made.value or ANY!r} is given twice")
                seen.add(key)
                if made.infinite and len(children) > 1:
                    raise TreeError(f"{here} > children[{i + 1}]: an `any_of` child must be the only child "
                                    "(it stands for every value of the dimension)")
        else:
            nodes.append(dataclasses.replace(node, reason=reason))

    walk(doc["root"], None, None, "root")
    structure = [[list(map(list, n.path)), n.value_list, n.is_leaf] for n in nodes]
    tree_id = "t" + _hash({"task": task_name, "nodes": sorted(structure, key=json.dumps)})
    settings = {**settings}
    if doc.get("tree_id"):
        settings["imported_from"] = str(doc["tree_id"])
    return assemble(tree_id, nodes, settings=settings, model=str(doc.get("model") or "imported"),
                    source="imported", task_name=task_name)
