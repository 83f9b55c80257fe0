"""Student-probe results in the catalog (table `probes`), and how the card and the report
show them.

One row per probed set and probe: what was probed (an export folder, a file, a snapshot;
its snapshot and run where known), the student, the held-out set (path and content
hash), steps, seed and the other settings, the figures beside the untrained student's,
and the time it took. The probing itself is synth/measures/probe.py's; `synth probe` is
flows/cli/probe.py.

An export folder's card gets a "Student probe" section between two markers
(`update_card`), so probing an export shows in its README.md without exporting again;
a later export of the same snapshot reads the same rows (`probe_section`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

from storage.catalog.catalog import Catalog, now
from storage.catalog.faults import staged
from synth.ids import data_hash

SECTION_START = "<!-- synth-probe:start -->"
SECTION_END = "<!-- synth-probe:end -->"
_CARD_SNAPSHOT = re.compile(r"snapshot\s+`([^`]+)`\s+\(`([^`]+)`\)\s+of run\s+`([^`]+)`")
_COLUMNS = ("probe_id", "source", "snapshot_id", "run_id", "student", "heldout", "heldout_hash", "heldout_rows",
            "train_rows", "steps", "seed", "settings", "device", "baseline_loss", "loss", "baseline_accuracy",
            "accuracy", "accuracy_rows", "first_train_loss", "last_train_loss", "train_s", "eval_s", "created_at")


def card_snapshot(export_dir: Path) -> tuple[str, str] | None:
    """(snapshot id, run id) an export folder's card names, or None."""
    card = Path(export_dir) / "README.md"
    if not card.is_file():
        return None
    match = _CARD_SNAPSHOT.search(card.read_text(encoding="utf-8"))
    return (match.group(2), match.group(3)) if match else None


def probe_rows(report: dict[str, Any], sources: Sequence[dict[str, Any]], heldout: str,
               heldout_hash: str) -> list[dict[str, Any]]:
    """Table rows of a probe report (synth.measures.probe.ProbeReport.as_dict()); `sources` holds,
    in the report's order, each set's `source`, `snapshot_id` and `run_id`."""
    settings, baseline = report["settings"], report["baseline"]
    created = now()
    rows = []
    for result, source in zip(report["results"], sources):
        key = {"source": source["source"], "student": report["student"], "heldout": heldout_hash,
               "settings": settings, "at": created.isoformat()}
        rows.append({
            "probe_id": data_hash(key), "source": source["source"], "snapshot_id": source.get("snapshot_id"),
            "run_id": source.get("run_id"), "student": report["student"], "heldout": heldout,
            "heldout_hash": heldout_hash, "heldout_rows": report["heldout_rows"], "train_rows": result["train_rows"],
            "steps": result["steps"], "seed": settings["seed"], "settings": json.dumps(settings, sort_keys=True),
            "device": report["device"], "baseline_loss": baseline["loss"], "loss": result["score"]["loss"],
            "baseline_accuracy": baseline["accuracy"], "accuracy": result["score"]["accuracy"],
            "accuracy_rows": result["score"]["accuracy_rows"], "first_train_loss": result["first_loss"],
            "last_train_loss": result["last_loss"], "train_s": result["train_seconds"],
            "eval_s": result["score"]["seconds"], "created_at": created,
        })
    return rows


def record_probes(catalog: Catalog, rows: Sequence[dict[str, Any]]) -> None:
    marks = ", ".join("?" for _ in _COLUMNS)
    with catalog.transaction() as con:
        for row in rows:  # a handful of rows a probe: bound parameters, no bulk path needed
            con.execute(f"INSERT INTO probes ({', '.join(_COLUMNS)}) VALUES ({marks}) ON CONFLICT DO NOTHING",
                        [row[c] for c in _COLUMNS])


def probes_of(catalog: Catalog, *, snapshot_id: str | None = None, run_id: str | None = None,
              source: str | None = None, limit: int = 10) -> list[dict[str, Any]]:
    """The newest probes of a snapshot, a run or a source, newest first."""
    where, params = [], []
    for column, value in (("snapshot_id", snapshot_id), ("run_id", run_id), ("source", source)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if not where or not catalog.query("SELECT 1 FROM information_schema.tables WHERE table_name = 'probes'"):
        return []  # a catalog from before schema 7, opened read-only: nothing probed yet
    return catalog.query(f"SELECT * FROM probes WHERE {' OR '.join(where)} ORDER BY created_at DESC LIMIT ?",
                         [*params, limit])


def _delta(value: Any, base: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if base is None else f"{value:.4g} ({value - base:+.4g})"


def _percent(value: Any) -> str:
    return "-" if value is None else f"{value:.1%}"


def probe_table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of probe rows: held-out loss and accuracy beside the baseline's."""
    lines = ["| probed | student | steps | seed | train rows | held-out loss (vs untrained) | untrained loss | "
             "accuracy | untrained accuracy | train s | when |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        student = Path(str(r["student"])).name
        when = str(r["created_at"])[:16]
        lines.append(f"| {r['source']} | {student} | {r['steps']} | {r['seed']} | {r['train_rows']} | "
                     f"{_delta(r['loss'], r['baseline_loss'])} | {r['baseline_loss']:.4g} | "
                     f"{_percent(r['accuracy'])} | {_percent(r['baseline_accuracy'])} | {r['train_s']:.0f} | "
                     f"{when} |")
    return "\n".join(lines)


def probe_section(rows: Sequence[dict[str, Any]]) -> str:
    """The card's "Student probe" section (empty without rows)."""
    if not rows:
        return ""
    first = rows[0]
    return (f"## Student probe\n\nA small student fine-tuned with LoRA on these rows (`synth probe`, docs/probe.md), "
            f"scored on held-out questions ({first['heldout_rows']} rows of `{Path(str(first['heldout'])).name}`): "
            "the mean negative log-likelihood per token of the reference answers (lower is better) and, where the "
            "task has a verifier, the accuracy of its greedy answers, beside the untrained student.\n\n"
            f"{probe_table(rows)}\n")


def card_block(section: str) -> str:
    """The section between its markers (the markers alone without a probe yet), as the card
    template places it: `update_card` finds them there later."""
    return f"{SECTION_START}\n{section}{SECTION_END}\n"


def update_card(export_dir: Path, section: str) -> Path | None:
    """Put `section` between the markers of the export's README.md (replacing what is
    there; before "## Strategies" in a card without them). None without a card."""
    card = Path(export_dir) / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8")
    block = card_block(section)
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        after = rest.split(SECTION_END, 1)[1].lstrip("\n")
        text = head + block + ("\n" + after if after else "")
    elif "\n## Strategies" in text:
        head, rest = text.split("\n## Strategies", 1)
        text = f"{head}\n{block}\n## Strategies{rest}"
    else:
        text = text.rstrip("\n") + "\n\n" + block
    with staged(card) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return card
