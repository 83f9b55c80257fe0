"""The dataset card: README.md with YAML metadata, and the leaf-distribution plot beside it.

`card_context` gathers from the catalog what a reader needs to trust and reuse the
dataset: the task, the recipe (secrets removed), the tree (dimensions, leaf count, a
collapsed view), the leaf distribution of the snapshot, the strategies, the model and
sampling, the dedup/filter/verifier figures, and how to make it again. `render_card`
turns that plain dict into Markdown through the sandboxed template
`prompts/card/README.md.jinja2`; `write_card` does both and draws the plot.

Everything generated (leaf labels, the task text) enters the template as a value, never as
template source. Table cells are escaped here, since the sandboxed template has no
custom filters.

Redaction: a recipe key is dropped when its name, split on `_` / `-`, holds a part `token`,
`key`, `auth`, or contains `secret`, `password`, `passwd`, `apikey`, `credential`;
`api_key_env` (a variable's NAME) and `max_tokens` are kept. String values shaped like
known token formats (hf_..., sk-...) are masked wherever they appear.

Left out: the data files (storage.publish.export) and the upload (storage.publish.hub).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

from storage.catalog.catalog import Catalog
from storage.catalog.faults import staged
from storage.reports.evaluation import render_table, snapshot_figures
from storage.reports.report import imbalance
from storage.tables.probes import card_block, probe_section, probes_of
from storage.tables.snapshots import get_snapshot
from synth.backends.embedded import MODEL_NOTICES
from synth.prompting.render import Renderer, prompt_example

TEMPLATE = "card/README.md.jinja2"
PLOT_NAME = "leaf_distribution.png"
MAX_PLOT_LEAVES = 60  # beyond this a bar chart is unreadable: the rest is summed in one bar
MAX_TABLE_LEAVES = 100

_KEEP_KEYS = {"api_key_env", "max_tokens"}
_SECRET_PARTS = {"token", "key", "auth"}
_SECRET_SUBSTRINGS = ("secret", "password", "passwd", "apikey", "credential")
_TOKEN_VALUE = re.compile(r"\b(hf_[A-Za-z0-9]{8,}|sk-[A-Za-z0-9_-]{8,}|api_[A-Za-z0-9]{16,})\b")


def is_secret_key(name: str) -> bool:
    """Whether a recipe key's name says it holds a credential.

    >>> [is_secret_key(k) for k in ("api_key", "hf_token", "api_key_env", "max_tokens", "keyword")]
    [True, True, False, False, False]
    """
    lowered = name.lower()
    if lowered in _KEEP_KEYS:
        return False
    parts = set(re.split(r"[_\-.]", lowered))
    return bool(parts & _SECRET_PARTS) or any(s in lowered for s in _SECRET_SUBSTRINGS)


def mask_tokens(text: str) -> str:
    return _TOKEN_VALUE.sub("[redacted]", text)


def redact_recipe(value: Any) -> Any:
    """A copy of the recipe without credential keys or token-shaped strings."""
    if isinstance(value, dict):
        return {k: redact_recipe(v) for k, v in value.items() if not is_secret_key(str(k))}
    if isinstance(value, list):
        return [redact_recipe(v) for v in value]
    if isinstance(value, str):
        return mask_tokens(value)
    return value


def size_category(n: int) -> str:
    """The Hub's size bucket.

    >>> size_category(999), size_category(1000), size_category(2_500_000)
    ('n<1K', '1K<n<10K', '1M<n<10M')
    """
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    for bound, label in bounds:
        if n < bound:
            return label
    return "n>1T" if n > 10**12 else "1B<n<10B"


def cell(text: Any) -> str:
    """A value made safe for one Markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def fence_for(text: str) -> str:
    """A code fence longer than any backtick run inside `text`, so the text cannot close it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def path_label(path: Iterable[Any]) -> str:
    parts = [f"{d}={v}" if v is not None else f"{d}=*" for d, v in path]
    return " / ".join(parts) if parts else "(whole task)"


# -- the tree -------------------------------------------------------------------------------


def _tree_nodes(catalog: Catalog, tree_id: str) -> list[dict[str, Any]]:
    rows = catalog.query(
        "SELECT node_id, parent_id, depth, dimension, value, value_list, path, is_leaf, infinite "
        "FROM tree_nodes WHERE tree_id = ? ORDER BY depth, node_id", [tree_id])
    for row in rows:
        row["path"] = json.loads(row["path"] or "[]")
        row["value_list"] = json.loads(row["value_list"]) if row["value_list"] else None
    return rows


def collapsed_tree(nodes: list[dict[str, Any]], counts: dict[str, int], max_children: int = 6,
                   max_depth: int = 4) -> str:
    """An indented view of the tree: at most `max_children` children a node (then '... N more'),
    `max_depth` levels, each line with the samples of the snapshot beneath it."""
    children: dict[str | None, list[dict[str, Any]]] = {}
    for node in nodes:
        children.setdefault(node["parent_id"], []).append(node)
    below: dict[str, int] = {}

    def total(node: dict[str, Any]) -> int:
        if node["node_id"] not in below:
            kids = children.get(node["node_id"], [])
            below[node["node_id"]] = counts.get(node["node_id"], 0) + sum(total(k) for k in kids)
        return below[node["node_id"]]

    def leaves_under(node: dict[str, Any]) -> int:
        kids = children.get(node["node_id"], [])
        return 1 if not kids else sum(leaves_under(k) for k in kids)

    lines: list[str] = []

    def walk(node: dict[str, Any], prefix: str, depth: int) -> None:
        kids = sorted(children.get(node["node_id"], []), key=lambda n: (-total(n), str(n["value"])))
        if depth >= max_depth and kids:
            lines.append(f"{prefix}... {leaves_under(node)} leaf/leaves below")
            return
        shown = kids[:max_children]
        for i, kid in enumerate(shown):
            last = i == len(shown) - 1 and len(kids) <= max_children
            if kid["value"] is None and kid["value_list"]:
                label = f"{kid['dimension']} = one of {len(kid['value_list'])} values"
            else:
                label = f"{kid['dimension']} = {kid['value']}"
            lines.append(f"{prefix}{'└── ' if last else '├── '}{label}  [{total(kid)}]")
            walk(kid, prefix + ("    " if last else "│   "), depth + 1)
        if len(kids) > max_children:
            rest = kids[max_children:]
            lines.append(f"{prefix}└── ... {len(rest)} more  [{sum(total(k) for k in rest)}]")

    roots = children.get(None, [])
    for root in roots:
        lines.append(f"(root)  [{total(root)}]")
        walk(root, "", 0)
    return "\n".join(lines)


def tree_summary(catalog: Catalog, tree_id: str | None, counts: dict[str, int],
                 tree_text: str | None = None) -> dict[str, Any] | None:
    if not tree_id:
        return None
    info = catalog.query("SELECT tree_id, status, source, requests, rounds FROM trees WHERE tree_id = ?", [tree_id])
    nodes = _tree_nodes(catalog, tree_id)
    if not nodes and tree_text is None:
        return None
    dimensions: dict[str, set[str]] = {}
    for node in nodes:
        if node["dimension"]:
            values = dimensions.setdefault(node["dimension"], set())
            values.update([node["value"]] if node["value"] is not None else (node["value_list"] or []))
    text = tree_text if tree_text is not None else collapsed_tree(nodes, counts)
    return {
        "tree_id": tree_id,
        "status": info[0]["status"] if info else "unknown",
        "source": info[0]["source"] if info else "unknown",
        "dimensions": [{"name": cell(name), "n_values": len(values),
                        "examples": cell(", ".join(sorted(values)[:12]) + (" ..." if len(values) > 12 else ""))}
                       for name, values in dimensions.items()],
        "leaf_count": sum(1 for n in nodes if n["is_leaf"]),
        "text": text,
        "fence": fence_for(text),
    }


# -- the distribution -----------------------------------------------------------------------


def snapshot_leaf_counts(catalog: Catalog, snapshot_id: str, tree_id: str | None) -> list[dict[str, Any]]:
    """Per leaf of the snapshot: label, samples, test samples; the tree's empty leaves included at 0."""
    # a sample made under another tree counts where it was placed on this one (storage/runs/placement.py)
    rows = catalog.query(
        """SELECT coalesce(m.leaf_id, s.leaf_id) AS leaf_id, any_value(s.leaf_path) AS leaf_path, count(*) AS n,
                  count(*) FILTER (ss.split = 'test') AS n_test
           FROM snapshot_samples ss JOIN samples_text s USING (sample_id)
           LEFT JOIN leaf_moves m ON m.tree_id = ? AND m.sample_id = s.sample_id
           WHERE ss.snapshot_id = ? GROUP BY 1""", [tree_id, snapshot_id])
    labels: dict[str, str] = {}
    if tree_id:
        for node in catalog.query("SELECT node_id, path FROM tree_nodes WHERE tree_id = ? AND is_leaf", [tree_id]):
            labels[node["node_id"]] = path_label(json.loads(node["path"] or "[]"))
    out = {}
    for row in rows:
        label = labels.get(row["leaf_id"]) or path_label(json.loads(row["leaf_path"] or "[]"))
        out[row["leaf_id"]] = {"leaf_id": row["leaf_id"], "label": label, "n": int(row["n"]),
                               "n_test": int(row["n_test"])}
    for leaf_id, label in labels.items():
        out.setdefault(leaf_id, {"leaf_id": leaf_id, "label": label, "n": 0, "n_test": 0})
    return sorted(out.values(), key=lambda r: (-r["n"], r["label"]))


def version_leaf_counts(catalog: Catalog, snapshot_id: str) -> dict[int, dict[str, int]]:
    """Versioned snapshots: first version -> leaf_id -> rows (how the dataset grew, per leaf)."""
    rows = catalog.query(
        """SELECT ss.first_version AS v, s.leaf_id, count(*) AS n FROM snapshot_samples ss JOIN samples s USING (sample_id)
           WHERE ss.snapshot_id = ? AND ss.first_version IS NOT NULL GROUP BY ALL""", [snapshot_id])
    out: dict[int, dict[str, int]] = {}
    for row in rows:
        out.setdefault(int(row["v"]), {})[row["leaf_id"] or ""] = int(row["n"])
    return out


def plot_snapshot_leaves(leaves: list[tuple[str, int]], path: Path, title: str,
                           by_version: dict[int, dict[str, int]] | None = None) -> Path:
    """A horizontal bar chart of samples per leaf (largest first), as PNG; with
    `by_version` (version -> label -> rows it added), each bar is stacked by version, so
    the plot shows how the dataset grew."""
    import matplotlib

    matplotlib.use("Agg")  # no display here, in CI or in a Prefect worker
    import matplotlib.pyplot as plt

    leaves = sorted(leaves, key=lambda item: -item[1])
    if len(leaves) > MAX_PLOT_LEAVES:
        rest = leaves[MAX_PLOT_LEAVES - 1:]
        leaves = leaves[:MAX_PLOT_LEAVES - 1] + [(f"({len(rest)} other leaves)", sum(n for _, n in rest))]
    labels = [label if len(label) <= 60 else label[:57] + "..." for label, _ in leaves]
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.3 * len(leaves) + 1.2)))
    if by_version and len(by_version) > 1:
        left = [0] * len(leaves)
        colours = plt.get_cmap("tab10")
        for i, version in enumerate(sorted(by_version)):
            widths = [by_version[version].get(label, 0) for label, _ in leaves]
            ax.barh(range(len(leaves)), widths, left=left, color=colours(i % 10), label=f"v{version}")
            left = [a + b for a, b in zip(left, widths)]
        ax.legend(title="added in", fontsize=8, loc="lower right")
    else:
        ax.barh(range(len(leaves)), [n for _, n in leaves], color="#4C72B0")
    ax.set_yticks(range(len(leaves)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("samples")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with staged(path, ".tmp.png") as tmp:  # matplotlib reads the format from the suffix
            fig.savefig(tmp, dpi=100, metadata={"Software": None})  # no version stamp: same input, same bytes
    finally:
        plt.close(fig)
    return path


# -- the context and the card ----------------------------------------------------------------


def _imbalance_text(counts: list[int]) -> dict[str, str]:
    figures = imbalance(counts)
    entropy, ratio = figures["normalized_entropy"], figures["max_min_ratio"]
    return {"normalized_entropy": "n/a" if entropy is None else f"{entropy:.3f}",
            "max_min_ratio": ("infinite (a leaf is empty)" if counts and min(counts) == 0 else "n/a")
            if ratio is None else f"{ratio:g}"}


def card_context(catalog: Catalog, snapshot_id: str, *, output_fields: dict[str, str], n_rows: dict[str, int],
                 data_files: dict[str, str], formats: Iterable[str] = ("parquet",), lineage: bool = True,
                 tree_text: str | None = None, leaf_counts: dict[str, int] | None = None,
                 license: str = "other", task_categories: list[str] | None = None,
                 plot: str | None = PLOT_NAME) -> dict[str, Any]:
    """Everything the card shows, as plain data. `leaf_counts` (label -> samples) and
    `tree_text` replace what would be read from the catalog."""
    snapshot = get_snapshot(catalog, snapshot_id)
    run = catalog.run(snapshot["run_id"]) or {}
    recipe = json.loads(run["recipe"]) if isinstance(run.get("recipe"), str) else (run.get("recipe") or {})
    task = recipe.get("task", {})
    leaves = snapshot_leaf_counts(catalog, snapshot["snapshot_id"], run.get("tree_id"))
    if leaf_counts is not None:
        leaves = [{"leaf_id": None, "label": label, "n": int(n), "n_test": None}
                  for label, n in sorted(leaf_counts.items(), key=lambda kv: -kv[1])]
    counts_by_leaf = {r["leaf_id"]: r["n"] for r in leaves if r["leaf_id"]}
    total = sum(n_rows.values())
    strategies = catalog.query(
        """SELECT s.strategy, count(*) AS n FROM snapshot_samples ss JOIN samples s USING (sample_id)
           WHERE ss.snapshot_id = ? GROUP BY s.strategy ORDER BY n DESC, s.strategy""", [snapshot["snapshot_id"]])
    stats = catalog.stats(snapshot["run_id"])
    attempts = sum(stats["samples"].values())
    fields = task.get("output_fields", {})
    metadata = {
        "license": license,
        "task_categories": task_categories or ["text-generation"],
        "language": ["en"],
        "size_categories": [size_category(total)],
        "pretty_name": str(task.get("name") or run.get("name") or snapshot["name"]),
        "tags": ["synthetic", "treesynth"],
    }
    if data_files:
        files = [{"split": split, "path": pattern} for split, pattern in data_files.items()]
        metadata["configs"] = [{"config_name": "default", "data_files": files}]
    return {
        "metadata": metadata,
        "title": str(task.get("name") or snapshot["name"]),
        "task": {
            "name": str(task.get("name", "")),
            "description": str(task.get("description", "")),
            "fields": [{"name": cell(name), "type": cell(kind),
                        "description": cell((fields.get(name) or {}).get("description", ""))}
                       for name, kind in output_fields.items()],
        },
        "snapshot": {"name": snapshot["name"], "snapshot_id": snapshot["snapshot_id"],
                     "test_fraction": snapshot["test_fraction"], "seed": snapshot["seed"],
                     "created_at": str(snapshot["created_at"])},
        "splits": [{"name": split, "rows": n} for split, n in n_rows.items()],
        "total_rows": total,
        "formats": list(formats),
        "lineage": lineage,
        "run": {"run_id": snapshot["run_id"], "recipe_hash": run.get("recipe_hash", ""),
                "backend": run.get("backend", ""), "model": run.get("model", ""),
                "status": run.get("status", ""), "strategy": run.get("strategy") or "",
                "strategy_reason": run.get("strategy_reason") or ""},
        "sampling": (recipe.get("backend") or {}).get("sampling", {}),
        "model_notice": MODEL_NOTICES.get(run.get("model") or "", ""),  # attribution of an embedded model
        "recipe": recipe,
        "tree": tree_summary(catalog, run.get("tree_id"), counts_by_leaf, tree_text),
        "leaves": [{"label": cell(r["label"]), "n": r["n"], "n_test": r["n_test"],
                    "share": f"{100 * r['n'] / total:.1f}%" if total else "-"} for r in leaves[:MAX_TABLE_LEAVES]],
        "leaves_hidden": max(0, len(leaves) - MAX_TABLE_LEAVES),
        "plot_leaves": [(r["label"], r["n"]) for r in leaves],  # every leaf, raw labels: the plot sums the tail
        "leaf_total": len(leaves),
        "imbalance": _imbalance_text([r["n"] for r in leaves]),
        "plot": plot,
        "strategies": [{"name": cell(r["strategy"]), "n": int(r["n"])} for r in strategies],
        "stats": stats,
        "attempts": attempts,
        "rates": {status: (f"{100 * stats['samples'][status] / attempts:.1f}%" if attempts else "-")
                  for status in stats["samples"]},
        "reject_reasons": [{"reason": cell(k), "n": v} for k, v in stats["reject_reasons"].items()],
        "quality": recipe.get("quality", {}),
        "verify": {"kind": "none", **(recipe.get("verify") or {})},
        "changelog": _changelog(catalog, snapshot),
        "plot_by_version": _plot_by_version(catalog, snapshot, leaves),
        "evaluation": snapshot_figures(catalog, snapshot["snapshot_id"], recipe),  # what `synth eval` prints
        "probe_section": probe_section(probes_of(catalog, snapshot_id=snapshot["snapshot_id"], limit=5)),
    }


def _changelog(catalog: Catalog, snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    row = catalog.query("SELECT dataset, version FROM snapshots WHERE snapshot_id = ?", [snapshot["snapshot_id"]])
    if not row or row[0]["dataset"] is None:
        return []
    from storage.tables.versions import changelog

    return changelog(catalog, row[0]["dataset"], row[0]["version"])


def _plot_by_version(catalog: Catalog, snapshot: dict[str, Any], leaves: list[dict[str, Any]]
                     ) -> dict[int, dict[str, int]] | None:
    counts = version_leaf_counts(catalog, snapshot["snapshot_id"])
    if len(counts) < 2:
        return None
    label_of = {r["leaf_id"] or "": r["label"] for r in leaves}
    return {v: {label_of.get(leaf, leaf): n for leaf, n in per.items()} for v, per in counts.items()}


def card_variables(context: dict[str, Any]) -> dict[str, Any]:
    """The template's variables for `context`; the recipe is redacted here again, so a
    hand-made context cannot leak a secret either."""
    variables = dict(context)
    variables["metadata_yaml"] = yaml.safe_dump(context["metadata"], sort_keys=False, allow_unicode=True)
    recipe_json = json.dumps(redact_recipe(context.get("recipe", {})), indent=2, ensure_ascii=False, sort_keys=True)
    variables["recipe_json"] = recipe_json
    variables["recipe_fence"] = fence_for(recipe_json)
    variables["sampling_json"] = json.dumps(context.get("sampling", {}), sort_keys=True)
    variables["quality_json"] = json.dumps(redact_recipe(context.get("quality", {})), sort_keys=True)
    variables["verify_json"] = json.dumps(redact_recipe(context.get("verify", {})), sort_keys=True)
    variables["evaluation_table"] = render_table([context["evaluation"]]).rstrip() if context.get("evaluation") else ""
    variables["probe_block"] = card_block(context.get("probe_section") or "")  # `synth probe` rewrites it in place
    return variables


def render_card(context: dict[str, Any], renderer: Renderer | None = None) -> str:
    """The README.md text for `context` (from `card_context`), through the run's renderer
    (a recipe may override the card's template too)."""
    return mask_tokens((renderer or Renderer()).render(TEMPLATE, card_variables(context))) + "\n"


@prompt_example(TEMPLATE)
def _example() -> dict[str, Any]:
    stats = {"samples": {"accepted": 2, "rejected": 1, "duplicate": 0, "filtered": 0, "dropped": 0},
             "reject_reasons": {"invalid_json": 1}, "verified": {"passed": 2, "failed": 0}, "requests": 5,
             "request_errors": 0, "tokens": {"prompt": 400, "completion": 120}}
    return card_variables({
        "metadata": {"license": "other", "task_categories": ["text-generation"], "language": ["en"],
                     "size_categories": ["n<1K"], "pretty_name": "gsm8k", "tags": ["synthetic", "treesynth"]},
        "title": "gsm8k",
        "task": {"name": "gsm8k", "description": "Grade-school math word problems.",
                 "fields": [{"name": "question", "type": "string", "description": "a math word problem"}]},
        "snapshot": {"name": "v1", "snapshot_id": "s1", "test_fraction": 0.0, "seed": 0, "created_at": "2026-12-02"},
        "splits": [{"name": "train", "rows": 2}], "total_rows": 2, "formats": ["parquet"], "lineage": True,
        "run": {"run_id": "r1", "recipe_hash": "r1", "backend": "llamacpp", "model": "SmolLM2-135M-Instruct-Q4_1",
                "status": "finished", "strategy": "new_question", "strategy_reason": "fixed by the recipe"},
        "sampling": {"temperature": 0.8}, "recipe": {"task": {"name": "gsm8k"}},
        "model_notice": MODEL_NOTICES["SmolLM2-135M-Instruct-Q4_1"],
        "tree": None, "leaves": [{"label": "root", "n": 2, "n_test": None, "share": "100.0%"}],
        "leaves_hidden": 0, "plot_leaves": [("root", 2)], "leaf_total": 1,
        "imbalance": {"max_min_ratio": "1.00", "normalized_entropy": "1.00"}, "plot": None,
        "strategies": [{"name": "new_question", "n": 2}], "stats": stats, "attempts": 3,
        "rates": {"accepted": "66.7%", "rejected": "33.3%", "duplicate": "0.0%", "filtered": "0.0%",
                  "dropped": "0.0%"},
        "reject_reasons": [{"reason": "invalid_json", "n": 1}], "quality": {}, "verify": {"kind": "none"},
        "changelog": [{"version": 1, "name": "gsm8k-v1", "rows": 2, "added": 2, "removed": 0,
                       "created_at": "2026-12-02", "run_id": "r1",
                       "by": [{"run_id": "r1", "model": "SmolLM2-135M-Instruct-Q4_1", "strategy": "new_question",
                               "rows": 2}]}],
        "evaluation": {"label": "this dataset", "rows": 2, "distinct_1": 0.8, "distinct_2": 0.95, "distinct_3": 1.0,
                       "gzip_ratio": 0.61, "repeated_8gram_share": 0.0, "exact_duplicate_rate": 0.0,
                       "near_duplicate_rate": 0.0, "nn_cosine": None, "vendi": None, "embedded_rows": 0,
                       "leaf_count": 1, "leaf_entropy": 1.0, "format_pass": {"rate": 1.0},
                       "verifier_pass": None, "lengths": {"question": {"mean": 12.0, "median": 12, "p10": 10,
                                                                      "p90": 14, "min": 10, "max": 14}},
                       "left_out": {"nn_cosine": "no embedding model installed", "vendi": "no embedding model "
                                    "installed", "verifier_pass": "no verifier verdicts in the catalog"}}})


def write_card(catalog: Catalog, snapshot_id: str, out_dir: Path, renderer: Renderer | None = None,
               **context_options: Any) -> list[Path]:
    """Write README.md and leaf_distribution.png into `out_dir`; returns both paths."""
    out_dir = Path(out_dir)
    context = card_context(catalog, snapshot_id, **context_options)
    written = []
    if context["plot"]:
        written.append(plot_snapshot_leaves(context["plot_leaves"], out_dir / context["plot"],
                                              f"{context['title']}: samples per leaf",
                                              context.get("plot_by_version")))
    card = out_dir / "README.md"
    with staged(card) as tmp:
        tmp.write_text(render_card(context, renderer), encoding="utf-8")
    return [card, *written]
