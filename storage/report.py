"""The dataset report: what a run made, where it fell, what it cost, how diverse it is.

Read-only over the catalog. `build_report` returns plain data (for JSON, artifacts and
the dataset card); `render_markdown` and `plot_leaf_distribution` turn it into what a
person reads and looks at.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from storage.catalog import Catalog


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


def distinct_n(texts: list[str], n: int) -> float | None:
    """Share of distinct word n-grams among all n-grams (higher = more lexical variety)."""
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = text.lower().split()
        grams.extend(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return round(len(set(grams)) / len(grams), 4) if grams else None


def leaf_table(catalog: Catalog, run_id: str) -> list[dict[str, Any]]:
    """One row per planned leaf: label, accepted, rejected/filtered/duplicate, target."""
    rows = catalog.query(
        """SELECT coalesce(s.leaf_id, '') AS leaf_id,
                  any_value(s.leaf_path) AS leaf_path,
                  count(DISTINCT s.slot) AS slots,
                  count(*) FILTER (s.status = 'accepted') AS accepted,
                  count(*) FILTER (s.status = 'rejected') AS rejected,
                  count(*) FILTER (s.status = 'filtered') AS filtered,
                  count(*) FILTER (s.status = 'duplicate') AS duplicate,
                  count(*) FILTER (s.status = 'dropped') AS dropped
           FROM samples s WHERE s.run_id = ? GROUP BY 1 ORDER BY 1""",
        [run_id],
    )
    for row in rows:
        path = json.loads(row.pop("leaf_path") or "[]")
        # infinite nodes draw a value per sample: label the leaf by its fixed dimensions only
        row["label"] = " / ".join(f"{d}={v}" for d, v in path) if path else "(all)"
    return rows


def build_report(catalog: Catalog, run_id: str) -> dict[str, Any]:
    run = catalog.run(run_id) or {}
    stats = catalog.stats(run_id)
    leaves = leaf_table(catalog, run_id)
    fields = [json.loads(r["fields"]) for r in catalog.query(
        "SELECT fields FROM samples WHERE run_id = ? AND status = 'accepted'", [run_id])]
    texts = [" ".join(str(v) for v in f.values()) for f in fields]
    by_dimension: dict[str, dict[str, int]] = {}
    for row in catalog.query(
            "SELECT leaf_path FROM samples WHERE run_id = ? AND status = 'accepted'", [run_id]):
        for dimension, value in json.loads(row["leaf_path"] or "[]"):
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
        "diversity": {"distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2),
                      "distinct_3": distinct_n(texts, 3)},
        "judge_scores": {int(r["score"]): int(r["n"]) for r in judged},
        "by_stage": [{k: (int(v) if isinstance(v, (int, float)) and k != "stage" else v) for k, v in r.items()}
                     for r in by_stage],
    }


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
        "",
        "| leaf | slots | accepted | rejected | filtered | duplicate |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['label']} | {r['slots']} | {r['accepted']} | {r['rejected']} | {r['filtered']} | "
              f"{r['duplicate']} |" for r in report["leaves"]]
    return "\n".join(lines) + "\n"


def plot_leaf_distribution(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display here or in CI
    import matplotlib.pyplot as plt

    leaves = report["leaves"]
    labels = [r["label"] if len(r["label"]) <= 48 else r["label"][:45] + "..." for r in leaves]
    height = max(2.5, 0.35 * len(leaves) + 1.2)
    fig, ax = plt.subplots(figsize=(9, height))
    ax.barh(labels, [r["accepted"] for r in leaves], color="#4C72B0", label="accepted")
    ax.barh(labels, [r["rejected"] + r["filtered"] + r["duplicate"] for r in leaves],
            left=[r["accepted"] for r in leaves], color="#DD8452", label="rejected / filtered / duplicate")
    ax.invert_yaxis()
    ax.set_xlabel("samples")
    imb = report["imbalance"]
    ax.set_title(f"{report['name']}: samples per leaf (normalized entropy {imb['normalized_entropy']})")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
