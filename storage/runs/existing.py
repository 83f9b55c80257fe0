"""Import an existing dataset into the catalog, each row classified into a tree's leaves.

The import is a run of its own (strategy 'existing') under the task's name, so
deduplication and reports treat its rows as part of the same dataset, and the
rebalancing plan can read how many samples each leaf already has
(`storage.catalog.bulk.accepted_per_leaf`) and generate only the deficits.

One sample per row: slot = the row's position, attempt 0, status 'accepted' with its
leaf when the row reached one, 'filtered' with reason 'unclassified: ...' when not.
Rows are classified and committed in chunks, requests and samples in one transaction,
so a killed import resumes where it stopped: a row whose sample exists is skipped and
not classified again, and the classify requests of a rerun have the same ids.

Leaves out: reading the dataset (synth.config.seeds), building the tree (synth.tree) and
choosing what to generate (synth/planning/plan.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from storage.catalog.bulk import accepted_per_leaf
from storage.catalog.catalog import Catalog, now
from storage.tables.trees import save_tree
from synth.ids import content_hash, stable_id
from synth.prompting.render import Renderer
from synth.tree import Tree
from synth.tree.classify import TEMPLATE, Assignment, classify_rows

STRATEGY = "existing"
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ImportResult:
    run_id: str
    rows: int
    counts: dict[str, int]  # leaf_id -> accepted rows (leaves with none are absent)
    unassigned: int  # rows that reached no leaf (samples with status 'filtered')
    requests: int  # classify requests recorded for this import, over all its attempts
    written: int = 0  # samples written by this call (0 when everything was already there)
    reasons: dict[str, int] = field(default_factory=dict)  # why rows are unassigned, with counts


def import_run_id(task: Any, tree: Tree, source: str, n_rows: int) -> str:
    """Same source, tree, size and task: the same run, so a second import resumes the first."""
    return stable_id("import", source, tree.tree_id, n_rows, task.name, length=16)


def _plain(value: Any) -> Any:
    """JSON-safe field values (Parquet rows may hold numpy scalars, dates, bytes)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    item = getattr(value, "item", None)  # numpy scalars
    return _plain(item()) if callable(item) else str(value)


def task_fields(task: Any, row: dict[str, Any], question_field: str) -> dict[str, Any]:
    """The row's values of the task's output fields; the question from `question_field`
    when the row does not name it like the task does."""
    fields = {name: _plain(row[name]) for name in task.output_fields if name in row}
    if task.question not in fields and question_field in row:
        fields[task.question] = _plain(row[question_field])
    return fields


def _sample(run_id: str, index: int, fields: dict[str, Any], a: Assignment) -> dict[str, Any]:
    row: dict[str, Any] = {
        "sample_id": stable_id(run_id, index, 0), "run_id": run_id, "slot": index, "attempt": 0,
        "leaf_path": [list(p) for p in a.path], "strategy": STRATEGY, "request_id": a.request_id,
        "fields": fields,
    }
    if a.status == "assigned":
        return {**row, "leaf_id": a.leaf_id, "status": "accepted", "content_hash": content_hash(fields)}
    return {**row, "leaf_id": None, "status": "filtered", "reason": f"unclassified: {a.reason}"}


def _result(catalog: Catalog, run_id: str, n_rows: int, written: int) -> ImportResult:
    unassigned = catalog.query(
        "SELECT reason, count(*) AS n FROM samples WHERE run_id = ? AND status = 'filtered' GROUP BY reason "
        "ORDER BY n DESC, reason", [run_id])
    requests = catalog.count("requests", run_id=run_id)
    return ImportResult(run_id=run_id, rows=n_rows, counts=accepted_per_leaf(catalog, [run_id]),
                        unassigned=sum(int(r["n"]) for r in unassigned), requests=requests,
                        written=written, reasons={r["reason"]: int(r["n"]) for r in unassigned})


def _done_slots(catalog: Catalog, run_id: str) -> set[int]:
    return {int(r["slot"]) for r in catalog.query("SELECT DISTINCT slot FROM samples WHERE run_id = ?", [run_id])}


def _start(catalog: Catalog, run_id: str, task: Any, tree: Tree, backend: Any, sampling: Any, source: str,
           question_field: str, n_rows: int) -> None:
    record = {"kind": "import", "source": source, "rows": n_rows, "question_field": question_field,
              "tree_id": tree.tree_id, "task": task.model_dump(mode="json") if hasattr(task, "model_dump")
              else {"name": task.name}, "template": TEMPLATE,
              "sampling": {"temperature": sampling.temperature, "top_p": sampling.top_p,
                           "max_tokens": sampling.max_tokens, "seed": getattr(sampling, "seed", None)}}
    catalog.start_run(run_id, task.name, record, run_id, backend.name, backend.model)
    save_tree(catalog, tree)  # the samples name its leaves; a tree already there is kept as is
    catalog.update_run(run_id, strategy=STRATEGY, strategy_reason=f"imported from {source}", tree_id=tree.tree_id)


def import_existing(catalog: Catalog, task: Any, tree: Tree, rows: list[dict[str, Any]], backend: Any,
                    sampling: Any, source: str, question_field: str, on_progress: Progress | None = None,
                    chunk_size: int = 256, renderer: Renderer | None = None, assign: str = "llm") -> ImportResult:
    """Classify `rows` into `tree`'s leaves and record them as one run; resumable, idempotent.

    `rows` are dicts holding the task's fields (as `synth.config.seeds.load_seeds` returns them);
    the text classified is `row[question_field]`. `source` labels the dataset (a path or
    a Hub id) and is part of the run id. A second call on a finished import writes
    nothing and returns the same counts; `on_progress(done, total)` follows the rows.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    run_id = import_run_id(task, tree, source, len(rows))
    run = catalog.run(run_id)
    done = _done_slots(catalog, run_id)
    if run is not None and run["status"] == "finished" and len(done) >= len(rows):
        if on_progress:
            on_progress(len(rows), len(rows))
        return _result(catalog, run_id, len(rows), 0)
    _start(catalog, run_id, task, tree, backend, sampling, source, question_field, len(rows))
    pending = [i for i in range(len(rows)) if i not in done]
    written = 0
    if on_progress:
        on_progress(len(done), len(rows))
    for start in range(0, len(pending), chunk_size):
        written += _import_chunk(catalog, run_id, task, tree, rows, pending[start:start + chunk_size], backend,
                                 sampling, question_field, renderer, assign)
        if on_progress:
            on_progress(len(done) + min(start + chunk_size, len(pending)), len(rows))
    result = _result(catalog, run_id, len(rows), written)
    message = (f"{len(rows)} rows imported from {source}: {sum(result.counts.values())} in "
               f"{len(result.counts)} leaves, {result.unassigned} unassigned")
    catalog.update_run(run_id, status="finished", message=message, finished_at=now())
    return result


def _import_chunk(catalog: Catalog, run_id: str, task: Any, tree: Tree, rows: list[dict[str, Any]],
                  indices: list[int], backend: Any, sampling: Any, question_field: str,
                  renderer: Renderer | None, assign: str = "llm") -> int:
    """Classify one chunk of rows and commit its requests and samples in one transaction."""
    request_rows: list[dict[str, Any]] = []
    texts = [_text(rows[i].get(question_field)) for i in indices]
    if assign == "embedding":  # the nearest leaf description: no requests
        from synth.similarity.embedder import get_embedder
        from synth.tree.embed_assign import assign_by_embedding

        assignments = assign_by_embedding(tree, texts, get_embedder().encode)
    else:
        assignments = classify_rows(tree, task, texts, backend, sampling, on_requests=request_rows.extend,
                                    row_keys=indices, namespace=run_id, renderer=renderer)
    for request in request_rows:
        request["run_id"] = run_id
        request["strategy"] = STRATEGY
    samples = [_sample(run_id, i, task_fields(task, rows[i], question_field), a)
               for i, a in zip(indices, assignments)]
    catalog.commit_chunk(request_rows, samples)
    return len(samples)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(_plain(value), ensure_ascii=False)




def import_for_run(catalog: Catalog, recipe: Any, tree: Tree | None, backend: Any, run_id: str,
                   renderer: Renderer | None = None, on_progress: Progress | None = None) -> dict[str, Any]:
    """Classify the rows of the recipe's `balance.dataset` onto the tree (an import run of
    its own, reused by any recipe with the same dataset and tree) and copy them into the
    run `run_id`, so its report and export hold them beside what is generated."""
    from synth.backends.base import SamplingSettings
    from synth.config.seeds import load_dataset_rows
    from synth.planning.balance import BalanceError

    if tree is None:
        raise BalanceError("balance.dataset: rebalancing classifies rows onto a tree; add a `tree:` section")
    spec = recipe.balance.dataset
    rows = load_dataset_rows(recipe)
    # classification is a lookup, not writing: greedy, short answers
    sampling = SamplingSettings(temperature=0.0, top_p=1.0, max_tokens=48, seed=recipe.backend.sampling.seed)
    by = "" if recipe.balance.assign == "llm" else f"#assign={recipe.balance.assign}"  # its own import run
    result = import_existing(catalog, recipe.task, tree, rows, backend, sampling,
                             source=f"{recipe.resolve_input(spec.path)}#limit={spec.limit}{by}",
                             question_field=recipe.task.question, on_progress=on_progress,
                             chunk_size=recipe.generation.chunk_size, renderer=renderer, assign=recipe.balance.assign)
    copied = catalog.adopt_existing(run_id, result.run_id)
    return {"import_run_id": result.run_id, "rows": result.rows, "per_leaf": result.counts,
            "unassigned": result.unassigned, "unassigned_reasons": result.reasons,
            "classify_requests": result.requests, "copied": copied}


__all__ = ["ImportResult", "STRATEGY", "import_existing", "import_for_run", "import_run_id", "task_fields"]
