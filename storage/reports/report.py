"""The run report: what a run made, where it fell, what it cost, how diverse it is, and
the dataset it contributes to (total, per leaf, per contribution, versions).

Read-only over the catalog. `build_report` returns plain data (for JSON, artifacts and
the dataset card); `render_markdown` and `plot_report_leaves` turn it into what a
person reads and looks at.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from storage.catalog.catalog import Catalog
from storage.reports.evaluation import catalog_figures, render_table
from storage.tables.probes import probe_section, probes_of
from synth.measures.figures import distinct_n  # noqa: F401  (the report's distinct-n is the evaluation's)


def imbalance(counts: list[int]) -> dict[str, float | None]:
    """Normalized entropy (1 = perfectly even) and the max/min ratio of per-leaf counts.

    >>> imbalance([5, 5, 5])["normalized_entropy"]
    1.0
    """
    total = sum(counts)
    if not counts or total == 0:
        return {"normalized_entropy": None, "max_min_ratio": None}
    probs = [c / total for c in counts if c > 0]
    entropy = -sum(p * math.log(p) for p in probs)
    norm = entropy / math.log(len(counts)) if len(counts) > 1 else 1.0
    low = min(counts)
    return {"normalized_entropy": round(norm, 4), "max_min_ratio": round(max(counts) / low, 3) if low else None}


def leaf_table(catalog: Catalog, run_id: str) -> list[dict[str, Any]]:
    """One row per leaf: label, target, what a rebalanced dataset held before (`before`),
    accepted now (existing kept + generated), rejected/filtered/duplicate/dropped attempts."""
    rows = catalog.query(
        """SELECT coalesce(s.leaf_id, '') AS leaf_id,
                  any_value(s.leaf_path) AS leaf_path,
                  count(DISTINCT s.slot) FILTER (s.slot >= 0) AS slots,
                  count(*) FILTER (s.status = 'accepted') AS accepted,
                  count(*) FILTER (s.status = 'accepted' AND s.strategy <> 'existing') AS generated,
                  count(*) FILTER (s.strategy = 'existing') AS before,
                  count(*) FILTER (s.status = 'rejected') AS rejected,
                  count(*) FILTER (s.status = 'filtered') AS filtered,
                  count(*) FILTER (s.status = 'duplicate') AS duplicate,
                  count(*) FILTER (s.status = 'dropped') AS dropped
           FROM samples_text s WHERE s.run_id = ? GROUP BY 1 ORDER BY 1""",
        [run_id],
    )
    targets = catalog.leaf_targets(run_id)
    by_leaf = {row["leaf_id"]: row for row in rows}
    for leaf_id, planned in targets.items():  # leaves nothing reached still belong in the table
        by_leaf.setdefault(leaf_id, {"leaf_id": leaf_id, "leaf_path": None, "slots": 0, "accepted": 0,
                                     "generated": 0, "before": 0, "rejected": 0, "filtered": 0, "duplicate": 0,
                                     "dropped": 0})
    out = []
    for leaf_id, row in sorted(by_leaf.items()):
        path = json.loads(row.pop("leaf_path") or "[]")
        planned = targets.get(leaf_id)
        # infinite nodes draw a value per sample: label the leaf by its fixed dimensions only
        row["label"] = planned["label"] if planned else (
            " / ".join(f"{d}={v}" for d, v in path) if path else "(all)")
        row["target"] = planned["target"] if planned else None
        out.append(row)
    return out


def build_report(catalog: Catalog, run_id: str) -> dict[str, Any]:
    run = catalog.run(run_id) or {}
    stats = catalog.stats(run_id)
    leaves = leaf_table(catalog, run_id)
    accepted_rows = catalog.samples(("fields", "leaf_id", "leaf_path"), run_id=run_id, status="accepted",
                                    order_by="sample_id")
    accepted = [{**r["fields"], "leaf_id": r["leaf_id"]} for r in accepted_rows]
    evaluation = catalog_figures(catalog, accepted, _recipe_of(run), [run_id], "this run")
    by_dimension: dict[str, dict[str, int]] = {}
    for row in accepted_rows:
        for dimension, value in row["leaf_path"] or []:
            by_dimension.setdefault(dimension, {})
            by_dimension[dimension][value] = by_dimension[dimension].get(value, 0) + 1
    attempts = sum(stats["samples"].values())
    by_stage = catalog.query(
        """SELECT stage, count(*) AS requests, sum(prompt_tokens) AS prompt_tokens,
                  sum(completion_tokens) AS completion_tokens, count(error) AS errors
           FROM requests WHERE run_id = ? GROUP BY stage ORDER BY stage""", [run_id])
    judged = catalog.query(
        """SELECT quality AS score, count(*) AS n FROM samples
           WHERE run_id = ? AND quality IS NOT NULL GROUP BY 1 ORDER BY 1""", [run_id])
    return {
        "run_id": run_id,
        "name": run.get("name"),
        "status": run.get("status"),
        "message": run.get("message"),
        "backend": run.get("backend"),
        "model": run.get("model"),
        "strategy": run.get("strategy"),
        "strategy_reason": run.get("strategy_reason"),
        "tree_id": run.get("tree_id"),
        "stats": stats,
        "rates": {
            "duplicate": round(stats["samples"]["duplicate"] / attempts, 4) if attempts else None,
            "rejected": round(stats["samples"]["rejected"] / attempts, 4) if attempts else None,
            "filtered": round(stats["samples"]["filtered"] / attempts, 4) if attempts else None,
        },
        "leaves": leaves,
        "by_dimension": by_dimension,
        "imbalance": imbalance([row["accepted"] for row in leaves]),
        "imbalance_before": imbalance([row["before"] for row in leaves]) if any(r["before"] for r in leaves) else None,
        "within_tolerance": _tolerance(run, leaves),
        "diversity": {k: evaluation[k] for k in ("distinct_1", "distinct_2", "distinct_3")},
        "evaluation": evaluation,  # the figures `synth eval` and the dataset card show
        "judge_scores": {int(r["score"]): int(r["n"]) for r in judged},
        "by_stage": [{k: (int(v) if isinstance(v, (int, float)) and k != "stage" else v) for k, v in r.items()}
                     for r in by_stage],
        "dataset": _dataset_section(catalog, run, leaves),
        "probes": probes_of(catalog, run_id=run_id),  # `synth probe` of this run's exports and snapshots
    }


def _recipe_of(run: dict[str, Any]) -> dict[str, Any]:
    return json.loads(run["recipe"]) if isinstance(run.get("recipe"), str) else (run.get("recipe") or {})


def _dataset_section(catalog: Catalog, run: dict[str, Any], leaves: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The dataset the run contributes to: per leaf (the run's leaves gain `in_dataset` and
    `reused`), per contribution, and its versions."""
    dataset = run.get("dataset")
    if not dataset:
        return None
    from storage.tables.datasets import Scope, summary
    from storage.tables.trees import load_tree
    from storage.tables.versions import changelog

    recipe = json.loads(run["recipe"]) if isinstance(run.get("recipe"), str) else (run.get("recipe") or {})
    reuse = recipe.get("reuse") or {}
    scope = Scope(dataset, tuple(reuse.get("exclude_runs") or ()), tuple(reuse.get("exclude_models") or ()),
                  tuple(reuse.get("exclude_templates") or ()), (run["run_id"],) if reuse.get("fresh") else None)
    tree = load_tree(catalog, run["tree_id"]) if run.get("tree_id") else None
    state = summary(catalog, dataset, tree, scope)
    for row in leaves:
        key = row["leaf_id"] or None
        row["in_dataset"] = state.per_leaf.get(key, 0)
        row["reused"] = max(0, row["in_dataset"] - row["accepted"])
    out = state.as_dict()
    out["reused"] = sum(r["reused"] for r in leaves)
    out["versions"] = changelog(catalog, dataset)
    out["placed"] = _placed_by_run(catalog, run["run_id"], tree)
    if out["versions"]:
        by_leaf = _latest_version_by_leaf(catalog, dataset, tree)
        for row in leaves:
            row["by_version"] = by_leaf.get(row["leaf_id"] or None, {})
    return out


def _placed_by_run(catalog: Catalog, run_id: str, tree: Any | None) -> list[dict[str, Any]]:
    """Earlier samples this run placed on its tree (storage/runs/placement.py): from where they
    were made to the leaf they landed on (or nowhere), with counts."""
    labels = {leaf.node_id: leaf.label for leaf in tree.leaves()} if tree is not None else {}
    rows = catalog.query(
        """SELECT t.leaf_path AS made_on, m.leaf_id, m.request_id IS NULL AS kept, count(*) AS n
           FROM leaf_moves m JOIN samples_text t USING (sample_id) WHERE m.run_id = ?
           GROUP BY ALL ORDER BY n DESC, made_on, m.leaf_id""", [run_id])
    out = []
    for r in rows:
        path = json.loads(r["made_on"]) if isinstance(r["made_on"], str) else (r["made_on"] or [])
        out.append({"from": " / ".join(f"{d}={v}" for d, v in path) or "(no tree)",
                    "to": labels.get(r["leaf_id"], r["leaf_id"]) if r["leaf_id"] else "(nowhere)",
                    "how": "kept from an earlier placement" if r["kept"] else "classified", "samples": int(r["n"])})
    return out


def _latest_version_by_leaf(catalog: Catalog, dataset: str, tree: Any | None) -> dict[str | None, dict[int, int]]:
    """Per leaf of `tree`, the rows of the dataset's latest version by the version that first
    held them: the leaf plot shows how each leaf grew."""
    leaf_ids = [leaf.node_id for leaf in tree.leaves()] if tree is not None else []
    rows = catalog.query(
        """SELECT CASE WHEN ? THEN coalesce(CASE WHEN list_contains(?::VARCHAR[], s.leaf_id) THEN s.leaf_id END,
                                             m.leaf_id) END AS leaf,
                  ss.first_version AS version, count(*) AS n
           FROM snapshot_samples ss JOIN samples s USING (sample_id)
           LEFT JOIN leaf_moves m ON m.tree_id = ? AND m.sample_id = s.sample_id
           WHERE ss.snapshot_id = (SELECT snapshot_id FROM snapshots WHERE dataset = ? ORDER BY version DESC LIMIT 1)
           GROUP BY ALL""", [tree is not None, leaf_ids, tree.tree_id if tree is not None else None, dataset])
    out: dict[str | None, dict[int, int]] = {}
    for r in rows:
        out.setdefault(r["leaf"], {})[int(r["version"] or 0)] = int(r["n"])
    return out


def _tolerance(run: dict[str, Any], leaves: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not any(r["target"] is not None for r in leaves):
        return None
    from synth.planning.balance import within_tolerance

    recipe = json.loads(run["recipe"]) if isinstance(run.get("recipe"), str) else (run.get("recipe") or {})
    tolerance = float((recipe.get("balance") or {}).get("tolerance", 0.1))
    short = [r["label"] for r in leaves if r["target"] is not None
             and not within_tolerance(r["accepted"], r["target"], tolerance)]
    return {"tolerance": tolerance, "short_leaves": short, "all_within": not short}


def render_markdown(report: dict[str, Any]) -> str:
    s = report["stats"]
    lines = [
        f"# Run report: {report['name']} ({report['run_id']})",
        "",
        f"**Status:** {report['status']} - {report['message']}",
        f"**Backend:** {report['backend']} / {report['model']}",
        f"**Strategy:** {report['strategy']} - {report['strategy_reason']}",
        "",
        "| accepted | rejected | duplicate | filtered | dropped | requests | prompt tokens | completion tokens |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {s['samples']['accepted']} | {s['samples']['rejected']} | {s['samples']['duplicate']} | "
        f"{s['samples']['filtered']} | {s['samples']['dropped']} | {s['requests']} | {s['tokens']['prompt']} | "
        f"{s['tokens']['completion']} |",
        "",
        "## Rejects by reason",
        "",
    ]
    lines += [f"- {reason}: {n}" for reason, n in s["reject_reasons"].items()] or ["- none"]
    if report.get("judge_scores"):
        lines += ["", "## Judge scores (every judged attempt)", "",
                  ", ".join(f"{score}: {n}" for score, n in report["judge_scores"].items())]
    imb, div = report["imbalance"], report["diversity"]
    lines += [
        "",
        "## Leaf distribution",
        "",
        f"Normalized entropy {imb['normalized_entropy']}, max/min ratio {imb['max_min_ratio']}; "
        f"distinct-1/2/3 {div['distinct_1']} / {div['distinct_2']} / {div['distinct_3']}.",
    ]
    before = report.get("imbalance_before")
    if before:
        ratio = before["max_min_ratio"] if before["max_min_ratio"] is not None else "infinite (a leaf was empty)"
        lines.append(f"Before rebalancing (the existing dataset as classified): normalized entropy "
                     f"{before['normalized_entropy']}, max/min ratio {ratio}.")
    tol = report.get("within_tolerance")
    if tol:
        lines.append(f"Every leaf within {tol['tolerance']:.0%} of its target." if tol["all_within"] else
                     f"Leaves below {1 - tol['tolerance']:.0%} of their target: {', '.join(tol['short_leaves'])}.")
    lines += [
        "",
        "| leaf | target | before | accepted | generated | rejected | filtered | duplicate | dropped |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['label']} | {'' if r['target'] is None else r['target']} | {r['before']} | {r['accepted']} | "
              f"{r['generated']} | {r['rejected']} | {r['filtered']} | {r['duplicate']} | {r['dropped']} |"
              for r in report["leaves"]]
    if report.get("evaluation"):
        lines += ["", "## Diversity and quality (accepted samples of this run; as `synth eval` computes them)", "",
                  render_table([report["evaluation"]]).rstrip()]
    if report.get("probes"):
        lines += ["", probe_section(report["probes"]).rstrip()]
    lines += render_dataset(report.get("dataset"))
    return "\n".join(lines) + "\n"


def render_dataset(dataset: dict[str, Any] | None) -> list[str]:
    if not dataset:
        return []
    lines = ["", f"## Dataset {dataset['dataset']}", "",
             f"{dataset['total']} accepted samples counted on the tree (target {dataset['target']}); "
             f"{dataset['reused']} of this run's leaves' samples were reused from earlier contributions.",
             "", "| contribution (run) | model | strategy | status | accepted | counted by this run |",
             "|---|---|---|---|---:|---:|"]
    lines += [f"| `{c['run_id']}` | {c['model']} | {c['strategy'] or ''} | {c['status']} | {c['accepted']} | "
              f"{c['kept']} |" for c in dataset["contributions"]]
    if dataset.get("placed"):
        moved = sum(p["samples"] for p in dataset["placed"])
        lines += ["", f"{moved} earlier samples were placed on this run's tree (made under another tree or none):",
                  "", "| made on | placed on | how | samples |", "|---|---|---|---:|"]
        lines += [f"| {p['from']} | {p['to']} | {p['how']} | {p['samples']} |" for p in dataset["placed"]]
    if dataset.get("versions"):
        lines += ["", "| version | rows | added | removed |", "|---|---:|---:|---:|"]
        lines += [f"| v{v['version']} | {v['rows']} | {v['added']} | {v['removed']} |" for v in dataset["versions"]]
    return lines


def plot_report_leaves(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display here or in CI
    import matplotlib.pyplot as plt

    leaves = report["leaves"]
    labels = [r["label"] if len(r["label"]) <= 48 else r["label"][:45] + "..." for r in leaves]
    height = max(2.5, 0.35 * len(leaves) + 1.2)
    fig, ax = plt.subplots(figsize=(9, height))
    versions = sorted({v for r in leaves for v in r.get("by_version", {})})
    if len(versions) > 1 and not any(r["before"] for r in leaves):
        # a growing dataset with versions: each leaf's rows in the latest version, by the version that added them
        colours = plt.get_cmap("viridis")
        left = [0] * len(leaves)
        for i, version in enumerate(versions):
            counts = [r.get("by_version", {}).get(version, 0) for r in leaves]
            ax.barh(labels, counts, left=left, color=colours(i / max(1, len(versions) - 1) * 0.85),
                    label=f"added in v{version}")
            left = [a + b for a, b in zip(left, counts)]
    elif any(r.get("reused") for r in leaves) and not any(r["before"] for r in leaves):
        # a growing dataset: what earlier contributions hold, and what this run added
        ax.barh(labels, [r["reused"] for r in leaves], color="#8172B3", label="earlier contributions")
        ax.barh(labels, [r["accepted"] for r in leaves], left=[r["reused"] for r in leaves], color="#4C72B0",
                label="this run")
    elif any(r["before"] for r in leaves):  # a rebalanced dataset: before next to after
        import numpy as np

        y = np.arange(len(leaves))
        ax.barh(y - 0.2, [r["before"] for r in leaves], height=0.4, color="#999999", label="before (existing)")
        ax.barh(y + 0.2, [r["accepted"] - r["generated"] for r in leaves], height=0.4, color="#4C72B0",
                label="after: existing kept")
        ax.barh(y + 0.2, [r["generated"] for r in leaves], height=0.4, left=[r["accepted"] - r["generated"]
                for r in leaves], color="#55A868", label="after: generated")
        ax.set_yticks(y, labels)
    else:
        ax.barh(labels, [r["accepted"] for r in leaves], color="#4C72B0", label="accepted")
        ax.barh(labels, [r["rejected"] + r["filtered"] + r["duplicate"] for r in leaves],
                left=[r["accepted"] for r in leaves], color="#DD8452", label="rejected / filtered / duplicate")
    targets = [r["target"] for r in leaves]
    if all(t is not None for t in targets):
        ax.scatter(targets, range(len(leaves)), marker="|", s=300, color="black", label="target", zorder=3)
    ax.invert_yaxis()
    ax.set_xlabel("samples")
    imb = report["imbalance"]
    ax.set_title(f"{report['name']}: samples per leaf (normalized entropy {imb['normalized_entropy']})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # outside: never over a bar
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
