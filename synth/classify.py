"""Route the rows of an existing dataset down a TreeSynth tree to its leaves.

Used to rebalance a dataset: once every row sits in a leaf, the distribution over the
leaves shows which ones are under-represented, and only those get generated samples.

How a row descends (`classify_rows`):
- level by level, in rounds: ONE batched backend call a round holds every row that
  still has a choice to make, whatever node it is at, so a tree of depth d costs about
  d calls whatever the number of rows (plus one round if some answer needs a retry);
- the question asked at a node is "which of these child values?" with a JSON schema
  whose `enum` is exactly those values, so a constrained backend (llama.cpp's grammar,
  vLLM's guided decoding) must pick one;
- a node with a single child needs no call: an infinite node (one child holding a value
  list, path value `*`) or a node pruned down to one value; the row descends directly;
- an answer that names none of the values (malformed JSON, a backend error, a value not
  in the list) is asked again ONCE, in the next round; a second failure stops the row at
  the node it reached, status 'unassigned', with the reason;
- a tree that never split has one leaf, the root: every row lands there without a call.

Matching an answer to a value, for backends that cannot enforce the enum: first an
exact match ignoring case and runs of whitespace (and stray quotes or a final period),
then the answer as a prefix of exactly ONE value ("geo" -> "geometry"); anything else
(no match, or a prefix of several values) is an invalid answer.

Request keys and seeds are hashes of the tree, the row (its key and its text), the node
and the attempt, so a rerun sends identical requests; `namespace` (the import's run id)
keeps two imports of different data from sharing request ids in the catalog.

The row's text is passed to the template as a variable: it is data and is never
rendered as a template.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from synth.ids import stable_id, stable_seed, text_hash
from synth.parsing import ParseFailure, extract_json
from synth.prompts import render, template_hash
from synth.tree import ANY, Tree, TreeNode
from synth.types import GenerationRequest, GenerationResult, Sampling

STAGE = "classify"
TEMPLATE = "classify/node.jinja2"
MAX_TRIES = 2  # the first answer and one retry
MAX_ROW_CHARS = 4000  # a prompt must fit a small context; longer rows are cut (the cut is only in the prompt)

RequestSink = Callable[[list[dict[str, Any]]], None]


@dataclass(frozen=True)
class Assignment:
    """Where one row ended: a leaf ('assigned') or the node it reached ('unassigned')."""

    row: int  # position in the `rows_text` given
    leaf_id: str | None
    node_id: str  # the leaf, or the node it stopped at
    path: list[tuple[str, str]]  # (dimension, value) from the root; value ANY through an infinite node
    status: str  # assigned / unassigned
    reason: str | None = None
    request_id: str | None = None  # the last request made for this row
    requests: int = 0  # how many requests this row cost


@dataclass
class _Row:
    """A row while it descends."""

    index: int
    key: str
    text: str
    node: TreeNode
    attempt: int = 0  # tries made at the current node
    request_id: str | None = None
    requests: int = 0
    reason: str | None = None
    done: Assignment | None = None


class InvalidAnswer(ValueError):
    """An answer that names none of the node's values; the message is the reason."""


# -- answers ------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(text.split()).strip("\"'` .").casefold()


def match_value(answer: str, values: Sequence[str]) -> str:
    """The value `answer` names: exact (case/whitespace-insensitive), else a unique prefix."""
    wanted = _norm(answer)
    if not wanted:
        raise InvalidAnswer("empty value")
    for value in values:
        if _norm(value) == wanted:
            return value
    prefixed = [v for v in values if _norm(v).startswith(wanted)]
    if len(prefixed) == 1:
        return prefixed[0]
    if prefixed:
        raise InvalidAnswer(f"{answer[:40]!r} is a prefix of several values ({', '.join(prefixed)})")
    raise InvalidAnswer(f"{answer[:40]!r} is not one of {', '.join(values)}")


def parse_answer(result: GenerationResult, values: Sequence[str]) -> str:
    """The chosen value; `InvalidAnswer` with a short reason for anything else."""
    if result.error:
        raise InvalidAnswer(f"backend error: {result.error[:200]}")
    data = extract_json(result.text or "")
    if isinstance(data, ParseFailure):
        bare = (result.text or "").strip()
        if not bare or "{" in bare or len(bare) > 80:  # broken JSON, not a bare label
            cut = " (cut at max_tokens)" if result.finish_reason == "length" else ""
            raise InvalidAnswer(f"{data}{cut}")
        data = bare
    if isinstance(data, dict):
        data = data.get("value")
    if not isinstance(data, str):
        raise InvalidAnswer('expected {"value": one of the listed values}')
    return match_value(data, values)


def node_schema(values: Sequence[str]) -> dict[str, Any]:
    return {"type": "object", "properties": {"value": {"type": "string", "enum": list(values)}},
            "required": ["value"]}


# -- descent --------------------------------------------------------------------------------


def _known_path(node: TreeNode) -> list[list[str]]:
    """Constraints for the prompt: an infinite node's `*` says nothing, so it is left out."""
    return [[d, v] for d, v in node.path if v != ANY]


def _settle(tree: Tree, row: _Row) -> None:
    """Descend through nodes with a single child; finish the row if it reached a leaf."""
    while True:
        if row.node.is_leaf:
            row.done = _assignment(row, "assigned")
            return
        children = tree.children(row.node.node_id)
        if not children:  # a split node without children: only a hand-made tree can say so
            row.done = _assignment(row, "unassigned", "the node has no children")
            return
        if len(children) > 1:
            return
        row.node, row.attempt = children[0], 0


def _assignment(row: _Row, status: str, reason: str | None = None) -> Assignment:
    node = row.node
    return Assignment(row=row.index, leaf_id=node.node_id if status == "assigned" else None, node_id=node.node_id,
                      path=list(node.path), status=status, reason=reason, request_id=row.request_id,
                      requests=row.requests)


def _sampling_dict(sampling: Any) -> dict[str, Any]:
    return {"temperature": sampling.temperature, "top_p": sampling.top_p, "max_tokens": sampling.max_tokens}


def _request(tree: Tree, task: Any, row: _Row, children: list[TreeNode], sampling: Any,
             namespace: str) -> tuple[GenerationRequest, dict[str, Any]]:
    values = [c.value for c in children if c.value is not None]
    variables = {"task_description": task.description, "path": _known_path(row.node),
                 "dimension": children[0].dimension, "values": values, "question": row.text[:MAX_ROW_CHARS]}
    messages = ({"role": "user", "content": render(TEMPLATE, variables)},)
    parts = (namespace, tree.tree_id, row.key, text_hash(row.text), row.node.node_id, row.attempt)
    request_id = "c" + stable_id(STAGE, *parts)
    s = Sampling(**_sampling_dict(sampling), seed=stable_seed(getattr(sampling, "seed", None), STAGE, *parts))
    request = GenerationRequest(key=request_id, messages=messages, sampling=s, json_schema=node_schema(values))
    row_out = {"request_id": request_id, "run_id": None, "tree_id": tree.tree_id, "stage": STAGE, "strategy": None,
               "leaf_id": row.node.node_id,  # classify requests: the node the row was at
               "template": TEMPLATE, "template_hash": template_hash(TEMPLATE),
               "prompt_hash": text_hash(json.dumps(list(messages), sort_keys=True)), "sampling": asdict(s)}
    return request, row_out


def _round(tree: Tree, task: Any, rows: list[_Row], backend: Any, sampling: Any,
           namespace: str) -> list[dict[str, Any]]:
    """One batched call for every row still choosing; moves each row down or marks it."""
    children = {row.node.node_id: tree.children(row.node.node_id) for row in rows}
    built = [_request(tree, task, row, children[row.node.node_id], sampling, namespace) for row in rows]
    requests = [request for request, _ in built]
    started = time.perf_counter()
    results = list(backend.generate(requests))
    if len(results) != len(requests):
        raise RuntimeError(f"backend {backend.name} returned {len(results)} results for {len(requests)} requests; "
                           "a backend must answer every request in order")
    wall = time.perf_counter() - started
    out = []
    for row, (request, request_row), result in zip(rows, built, results):
        request_row.update(raw_text=result.text, finish_reason=result.finish_reason,
                           prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                           latency_s=result.latency_s or wall / len(requests), error=result.error)
        out.append(request_row)
        row.request_id, row.requests = request.key, row.requests + 1
        kids = children[row.node.node_id]
        try:
            value = parse_answer(result, [c.value for c in kids if c.value is not None])
        except InvalidAnswer as exc:
            if request_row["error"] is None:
                request_row["error"] = f"invalid: {exc}"
            _failed(row, str(exc))
            continue
        row.node, row.attempt, row.reason = next(c for c in kids if c.value == value), 0, None
        _settle(tree, row)
    return out


def _failed(row: _Row, reason: str) -> None:
    row.attempt += 1
    row.reason = reason
    if row.attempt >= MAX_TRIES:
        where = " / ".join(f"{d}={v}" for d, v in row.node.path) or "root"
        row.done = _assignment(row, "unassigned", f"at {where}: {reason} (after {MAX_TRIES} tries)")


def classify_rows(tree: Tree, task: Any, rows_text: list[str], backend: Any, sampling: Any,
                  on_requests: RequestSink | None = None, *, row_keys: Sequence[Any] | None = None,
                  namespace: str = "") -> list[Assignment]:
    """One Assignment per row, in order.

    `task` needs a `description`; `sampling` anything with temperature, top_p, max_tokens
    (and optionally seed). `on_requests(rows)` gets every round's request rows (ready for
    the catalog's `requests` table, run_id None) as soon as the round returns.
    `row_keys` name the rows in request ids (default: their positions), so a caller that
    classifies a dataset in chunks passes the rows' positions in the whole dataset.
    """
    keys = list(row_keys) if row_keys is not None else list(range(len(rows_text)))
    if len(keys) != len(rows_text):
        raise ValueError(f"{len(keys)} row_keys for {len(rows_text)} rows")
    rows = [_Row(i, str(key), text if isinstance(text, str) else str(text or ""), tree.root)
            for i, (key, text) in enumerate(zip(keys, rows_text))]
    for row in rows:
        if not row.text.strip() and not tree.root.is_leaf:
            row.done = _assignment(row, "unassigned", "no text to classify")
        else:
            _settle(tree, row)
    while True:
        pending = [row for row in rows if row.done is None]
        if not pending:
            break
        request_rows = _round(tree, task, pending, backend, sampling, namespace)
        if on_requests is not None:
            on_requests(request_rows)
    return [row.done for row in rows]  # type: ignore[misc]  # every row is done here


def leaf_distribution(tree: Tree, assignments: Sequence[Assignment]) -> dict[str, int]:
    """leaf_id -> rows assigned to it, with every leaf present (0 for an empty one)."""
    counts = {leaf.node_id: 0 for leaf in tree.leaves()}
    for a in assignments:
        if a.leaf_id is not None:
            counts[a.leaf_id] = counts.get(a.leaf_id, 0) + 1
    return counts


__all__ = ["Assignment", "InvalidAnswer", "MAX_TRIES", "STAGE", "TEMPLATE", "classify_rows", "leaf_distribution",
           "match_value", "node_schema", "parse_answer"]
