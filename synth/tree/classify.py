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

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from synth.backends.base import Backend, GenerationRequest, GenerationResult, Sampling
from synth.ids import stable_id, stable_seed, text_hash
from synth.prompting.calls import Call, call_batch
from synth.prompting.parsing import extract_json
from synth.prompting.render import Renderer, prompt_example
from synth.reject import Reject, Rejected
from synth.tree import ANY, Tree, TreeNode

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


INVALID = "invalid"  # the reason of an answer that names none of the node's values


# -- answers ------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(text.split()).strip("\"'` .").casefold()


def match_value(answer: str, values: Sequence[str]) -> str:
    """The value `answer` names: exact (case/whitespace-insensitive), else a unique prefix."""
    wanted = _norm(answer)
    if not wanted:
        raise Rejected(INVALID, "empty value")
    for value in values:
        if _norm(value) == wanted:
            return value
    prefixed = [v for v in values if _norm(v).startswith(wanted)]
    if len(prefixed) == 1:
        return prefixed[0]
    if prefixed:
        raise Rejected(INVALID, f"{answer[:40]!r} is a prefix of several values ({', '.join(prefixed)})")
    raise Rejected(INVALID, f"{answer[:40]!r} is not one of {', '.join(values)}")


def parse_answer(result: GenerationResult, values: Sequence[str]) -> str:
    """The chosen value; raises `Rejected` with a short reason for anything else."""
    if result.error:
        raise Rejected(INVALID, f"backend error: {result.error[:200]}")
    data = extract_json(result.text or "")
    if isinstance(data, Reject):
        bare = (result.text or "").strip()
        if not bare or "{" in bare or len(bare) > 80:  # broken JSON, not a bare label
            cut = " (cut at max_tokens)" if result.finish_reason == "length" else ""
            raise Rejected(INVALID, f"{data}{cut}")
        data = bare
    if isinstance(data, dict):
        data = data.get("value")
    if not isinstance(data, str):
        raise Rejected(INVALID, 'expected {"value": one of the listed values}')
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


def _call(tree: Tree, task: Any, row: _Row, children: list[TreeNode], sampling: Any, namespace: str,
          renderer: Renderer) -> Call:
    values = [c.value for c in children if c.value is not None]
    variables = {"task_description": task.description, "path": _known_path(row.node),
                 "dimension": children[0].dimension, "values": values, "question": row.text[:MAX_ROW_CHARS]}
    messages = ({"role": "user", "content": renderer.render(TEMPLATE, variables)},)
    parts = (namespace, tree.tree_id, row.key, text_hash(row.text), row.node.node_id, row.attempt)
    s = Sampling(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_tokens,
                 seed=stable_seed(getattr(sampling, "seed", None), STAGE, *parts))
    request = GenerationRequest(key="c" + stable_id(STAGE, *parts), messages=messages, sampling=s,
                                json_schema=node_schema(values))
    return Call(request, STAGE, TEMPLATE, renderer.template_hash(TEMPLATE), tree_id=tree.tree_id,
                leaf_id=row.node.node_id)  # classify requests: the node the row was at


def _round(tree: Tree, task: Any, rows: list[_Row], backend: Backend, sampling: Any, namespace: str,
           renderer: Renderer) -> list[dict[str, Any]]:
    """One batched call for every row still choosing; moves each row down or marks it."""
    children = {row.node.node_id: tree.children(row.node.node_id) for row in rows}
    calls = [_call(tree, task, row, children[row.node.node_id], sampling, namespace, renderer) for row in rows]
    out = []
    for row, call, (result, request_row) in zip(rows, calls, call_batch(backend, calls)):
        out.append(request_row)
        row.request_id, row.requests = call.request.key, row.requests + 1
        kids = children[row.node.node_id]
        try:
            value = parse_answer(result, [c.value for c in kids if c.value is not None])
        except Rejected as exc:
            if request_row["error"] is None:
                request_row["error"] = str(exc.reject)
            _failed(row, exc.reject.detail)
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


def classify_rows(tree: Tree, task: Any, rows_text: list[str], backend: Backend, sampling: Any,
                  on_requests: RequestSink | None = None, *, row_keys: Sequence[Any] | None = None,
                  namespace: str = "", renderer: Renderer | None = None) -> list[Assignment]:
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
        request_rows = _round(tree, task, pending, backend, sampling, namespace, renderer or Renderer())
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


@prompt_example(TEMPLATE)
def _example() -> dict[str, Any]:
    return {"task_description": "Grade-school math word problems.", "path": [["setting", "a farm"]],
            "dimension": "operation", "values": ["addition", "division"],
            "question": "A farmer has 12 cows and sells a third of them. How many are left?"}


__all__ = ["Assignment", "MAX_TRIES", "STAGE", "TEMPLATE", "classify_rows", "leaf_distribution", "match_value",
           "node_schema", "parse_answer"]
