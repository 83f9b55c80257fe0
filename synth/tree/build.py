"""Grow a TreeSynth tree breadth-first: one batched backend call per stage per level.

For every node of a level the builder asks, in ONE batched call per stage, for (1)
pivot samples inside the node's subspace, (2) one new dimension that separates the
pivots, with every pivot's value on it, and (3) the rest of that dimension's values
(synth/tree/answers.py has the schemas and parsers). Only the nodes whose answer failed
validation are asked again (batched, at most `max_retries` times), so a tree of depth d
costs about 3 x d sequential rounds whatever its width.

Rules the model's answers do not decide:
- more values than `infinite_threshold`: the dimension is "infinite": ONE child holds
  the whole list (`value_list`, path value `*`) and a value is drawn per sample;
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

Prompts render through the run's `Renderer`, so a recipe may override any of them;
the tree id includes the hashes of the templates used.

Leaves out: storage (storage/tables/trees.py), generation inside the leaves (the plan), and
any network or engine: the backend is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar

from synth.backends.base import Backend, GenerationRequest, GenerationResult, Sampling
from synth.ids import data_hash
from synth.prompting.calls import Call, call_batch
from synth.prompting.render import Renderer, prompt_example
from synth.reject import Rejected
from synth.tree.answers import (dimension_schema, expand_schema, parse_dimension, parse_expansion, parse_pivots,
                                pivots_schema)
from synth.tree.model import ANY, Tree, TreeNode, leaf_constraints, node_id_for, ordered

STAGES = ("pivots", "dimension", "expand")
TEMPLATES = {stage: f"tree/{stage}.jinja2" for stage in STAGES}
ALGORITHM_VERSION = 2  # part of the tree id: a change of the rules or schemas makes new trees (2: dimension names start with a letter)
SETTINGS_NOT_IN_KEY = {"file", "leaf_weights", "enabled"}  # they do not change what gets built
RequestSink = Callable[[list[dict[str, Any]]], None]


def settings_key(settings: Any) -> dict[str, Any]:
    data = settings.model_dump(mode="json") if hasattr(settings, "model_dump") else dict(settings)
    return {k: v for k, v in data.items() if k not in SETTINGS_NOT_IN_KEY}


def tree_id_for(task: Any, settings: Any, model: str, renderer: Renderer | None = None) -> str:
    """Hash of what makes the tree: task, tree settings (seed included), model, the prompts used."""
    renderer = renderer or Renderer()
    q = task.question
    return "t" + data_hash({
        "task": [task.name, task.description, q, task.output_fields[q].description],
        "tree": settings_key(settings),
        "model": model,
        "templates": {stage: renderer.template_hash(name) for stage, name in TEMPLATES.items()},
        "algorithm": ALGORITHM_VERSION,
    })


@dataclass
class Work:
    """A frontier node while its level is being built."""

    node: TreeNode
    constraints: list[tuple[str, str]]  # the path with infinite values drawn for the prompts
    pivots: list[str] = field(default_factory=list)
    dimension: str | None = None
    values: list[str] = field(default_factory=list)
    failure: str | None = None
    note: str | None = None

    def common(self, task: Any) -> dict[str, Any]:
        return {"task_description": task.description, "path": [list(p) for p in self.constraints]}


class TreeStage:
    """One question the builder asks every node of a level: variables, schema, parse."""

    name: ClassVar[str]

    def __init__(self, task: Any, settings: Any) -> None:
        self.task, self.s = task, settings

    def variables(self, work: Work) -> dict[str, Any]:
        raise NotImplementedError

    def schema(self, work: Work) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, work: Work, result: GenerationResult) -> None:
        """Store the answer on `work`, or raise Rejected."""
        raise NotImplementedError


class PivotsStage(TreeStage):
    name = "pivots"

    def variables(self, work: Work) -> dict[str, Any]:
        q = self.task.question
        return {**work.common(self.task), "field_name": q, "field_description": self.task.output_fields[q].description,
                "n": self.s.pivots_per_node}

    def schema(self, work: Work) -> dict[str, Any]:
        return pivots_schema(self.s.pivots_per_node)

    def parse(self, work: Work, result: GenerationResult) -> None:
        work.pivots = parse_pivots(result, self.s.pivots_per_node)


class DimensionStage(TreeStage):
    name = "dimension"

    def variables(self, work: Work) -> dict[str, Any]:
        return {**work.common(self.task), "pivots": work.pivots, "excluded": [d for d, _ in work.node.path],
                "max_values": self.s.max_values}

    def schema(self, work: Work) -> dict[str, Any]:
        return dimension_schema(len(work.pivots))

    def parse(self, work: Work, result: GenerationResult) -> None:
        work.dimension, work.values = parse_dimension(result, work.pivots, [d for d, _ in work.node.path],
                                                      self.s.max_values)


class ExpandStage(TreeStage):
    name = "expand"

    def variables(self, work: Work) -> dict[str, Any]:
        return {**work.common(self.task), "dimension": work.dimension, "values": work.values,
                "infinite_threshold": self.s.infinite_threshold}

    def schema(self, work: Work) -> dict[str, Any]:
        return expand_schema(self.s.infinite_threshold)

    def parse(self, work: Work, result: GenerationResult) -> None:
        _, new = parse_expansion(result, work.values)
        work.values = work.values + new


class TreeBuilder:
    def __init__(self, task: Any, settings: Any, backend: Backend, sampling: Any, renderer: Renderer | None = None,
                 on_requests: RequestSink | None = None) -> None:
        self.task, self.s, self.backend = task, settings, backend
        self.renderer = renderer or Renderer()
        self.tree_id = tree_id_for(task, settings, backend.model, self.renderer)
        self.sampling = sampling
        self.on_requests = on_requests
        self.rounds = self.requests = self.prompt_tokens = self.completion_tokens = 0
        # per stage: requests, invalid answers, retries, nodes that failed for good. Build-time
        # only (not stored): the requests table holds the same facts row by row.
        self.stats = {stage: {"nodes": 0, "requests": 0, "invalid": 0, "retries": 0, "failed_nodes": 0}
                      for stage in STAGES}
        self.pivots, self.dimension, self.expand = (PivotsStage(task, settings), DimensionStage(task, settings),
                                                    ExpandStage(task, settings))

    def _call(self, stage: TreeStage, works: list[Work], attempt: int) -> list[tuple[GenerationResult, dict]]:
        template = TEMPLATES[stage.name]
        t_hash = self.renderer.template_hash(template)
        calls = []
        for work in works:
            content = self.renderer.render(template, stage.variables(work))
            seed = int(data_hash([self.s.seed, self.tree_id, work.node.node_id, stage.name, attempt], 8), 16) & 0x7FFFFFFF
            request = GenerationRequest(
                key="r" + data_hash([self.tree_id, work.node.node_id, stage.name, attempt]),
                messages=({"role": "user", "content": content},),
                sampling=self.sampling_for(seed), json_schema=stage.schema(work))
            calls.append(Call(request, stage.name, template, t_hash, tree_id=self.tree_id,
                              leaf_id=work.node.node_id))  # tree requests: the node it was asked for
        answered = call_batch(self.backend, calls)
        self.rounds += 1
        self.requests += len(calls)
        self.stats[stage.name]["requests"] += len(calls)
        if attempt:
            self.stats[stage.name]["retries"] += len(calls)
        for result, _ in answered:
            self.prompt_tokens += result.prompt_tokens
            self.completion_tokens += result.completion_tokens
        return answered

    def sampling_for(self, seed: int) -> Sampling:
        s = self.sampling
        return Sampling(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, seed=seed)

    def run_stage(self, stage: TreeStage, works: list[Work]) -> None:
        """Ask `works`; retry only the ones whose answer failed; mark the rest failed."""
        self.stats[stage.name]["nodes"] += len(works)
        pending = list(works)
        reasons: dict[str, str] = {}
        for attempt in range(self.s.max_retries + 1):
            if not pending:
                break
            answered = self._call(stage, pending, attempt)
            failed = []
            for work, (result, row) in zip(pending, answered):
                try:
                    stage.parse(work, result)
                except Rejected as exc:
                    reasons[work.node.node_id] = exc.reject.detail
                    self.stats[stage.name]["invalid"] += 1
                    if row["error"] is None:  # backend errors are already there
                        row["error"] = str(exc.reject)
                    failed.append(work)
            if self.on_requests is not None:
                self.on_requests([row for _, row in answered])
            pending = failed
        for work in pending:
            self.stats[stage.name]["failed_nodes"] += 1
            work.failure = f"{stage.name}: {reasons[work.node.node_id]} (after {self.s.max_retries + 1} tries)"

    def split_level(self, frontier: list[TreeNode], finished_leaves: int) -> tuple[list[TreeNode], list[TreeNode]]:
        """Ask every node of the level; -> (final nodes of this level, the next frontier)."""
        s = self.s
        room = s.max_leaves - finished_leaves - len(frontier)  # leaves we may still add
        # A split adds at least one leaf unless it is infinite: ask for no more nodes than can fit.
        tried = [Work(n, leaf_constraints(n, s.seed)) for n in frontier[:max(room, 0)]]
        self.run_stage(self.pivots, tried)
        with_pivots = [w for w in tried if w.failure is None]
        self.run_stage(self.dimension, with_pivots)
        classified = [w for w in with_pivots if w.failure is None]
        self.run_stage(self.expand, classified)
        for w in classified:
            if w.failure is not None:  # the classification stands; only the completion failed
                w.note, w.failure = f"kept the classified values; {w.failure}", None
        done: list[TreeNode] = []
        next_frontier: list[TreeNode] = []
        added = 0
        by_id = {w.node.node_id: w for w in tried}
        for node in frontier:
            w = by_id.get(node.node_id)
            if w is None:
                done.append(replace(node, reason="max_leaves"))
                continue
            if w.failure is not None:
                done.append(replace(node, reason=f"unsplittable: {w.failure}"))
                continue
            values, notes = list(w.values), [w.note] if w.note else []
            infinite = len(values) > s.infinite_threshold
            if not infinite:
                if len(values) > s.max_values:
                    notes.append(f"kept {s.max_values} of {len(values)} values (max_values)")
                    values = values[:s.max_values]
                fit = s.max_leaves - finished_leaves - len(frontier) - added + 1
                if fit < 2:
                    done.append(replace(node, reason="max_leaves"))
                    continue
                if len(values) > fit:
                    notes.append(f"kept {fit} of {len(values)} values (max_leaves)")
                    values = values[:fit]
                added += len(values) - 1
            done.append(replace(node, is_leaf=False, status="split", reason="; ".join(notes) or None))
            next_frontier += children(node, w.dimension, values, infinite)
        return done, next_frontier

    def build(self) -> Tree:
        root = TreeNode(node_id_for([]), None, 0, None, None, None, [], is_leaf=True)
        done: list[TreeNode] = []  # final nodes, breadth-first
        frontier = [root]
        finished_leaves = 0
        while frontier:
            depth = frontier[0].depth
            if depth >= self.s.max_depth:
                done += [replace(n, reason="max_depth") for n in frontier]
                break
            level, frontier = self.split_level(frontier, finished_leaves)
            done += level
            finished_leaves += sum(1 for n in level if n.is_leaf)
        sampling = {"temperature": self.sampling.temperature, "top_p": self.sampling.top_p,
                    "max_tokens": self.sampling.max_tokens}
        return Tree(tree_id=self.tree_id, nodes=ordered(done), settings={**settings_key(self.s), "sampling": sampling},
                    model=self.backend.model, rounds=self.rounds, requests=self.requests,
                    prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens, source="built",
                    task_name=self.task.name, stats=self.stats)


def build_tree(task: Any, settings: Any, backend: Backend, sampling: Any, on_requests: RequestSink | None = None,
               renderer: Renderer | None = None) -> Tree:
    """Grow a tree breadth-first; every stage of a level is one batched backend call.

    `settings` is a `synth.config.recipe.TreeSettings`, `sampling` anything with temperature,
    top_p and max_tokens. `on_requests(rows)` gets the request rows of every batch as soon
    as it returns, ready for the catalog's `requests` table.
    """
    return TreeBuilder(task, settings, backend, sampling, renderer, on_requests).build()


def children(node: TreeNode, dimension: str, values: list[str], infinite: bool) -> list[TreeNode]:
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


# Example variables for trial renders of user overrides and for the golden prompts.
_PATH = [["setting", "a farm"]]
_PIVOTS = ["A farmer has 12 cows and sells a third of them. How many are left?",
           "Hens lay 30 eggs a day; how many eggs in a week?"]


@prompt_example(TEMPLATES["pivots"])
def _pivots_example() -> dict[str, Any]:
    return {"task_description": "Grade-school math word problems.", "path": _PATH, "field_name": "question",
            "field_description": "a math word problem", "n": 2}


@prompt_example(TEMPLATES["dimension"])
def _dimension_example() -> dict[str, Any]:
    return {"task_description": "Grade-school math word problems.", "path": _PATH, "pivots": _PIVOTS,
            "excluded": ["setting"], "max_values": 4}


@prompt_example(TEMPLATES["expand"])
def _expand_example() -> dict[str, Any]:
    return {"task_description": "Grade-school math word problems.", "path": _PATH, "dimension": "operation",
            "values": ["division", "multiplication"], "infinite_threshold": 10}
