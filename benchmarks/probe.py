"""Does the student probe tell good data from junk, and what does it cost here?

Trains the probe's student (synth/measures/probe.py; default the embedded SmolLM2-135M) for the
same steps, seed and settings on:
  gsm8k   real GSM8K train rows;
  demo    accepted rows of a demo export (`--demo out/gsm8k`; optional);
  junk    the same GSM8K rows corrupted the ways the gates reject them, a quarter each:
          a prompt-scaffold echo for an answer (`template_text`), the answer cut off
          mid-sentence with a forced `#### N` (`truncated`), the answer without its
          `#### N` line (`pattern_mismatch`), blank lines and code fences before `#### N`
          (`symbol_lines`);
and scores each on held-out GSM8K rows (the end of the train file, disjoint from the
training rows) beside the untrained student. Then G-Vendi (synth/measures/gvendi.py) of each set,
with its cost per row. Prints a markdown table; `--json-out` keeps the figures.

    python benchmarks/probe.py --rows 64 --steps 6 --max-length 192 --heldout 16 --gvendi-rows 8
    python benchmarks/probe.py --demo out/gsm8k --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synth.measures.gvendi import GradientSketcher, GVendiSettings, g_vendi  # noqa: E402
from synth.measures.probe import ProbeSettings, run_probe  # noqa: E402
from synth.measures.student import Pair, default_student, device_name  # noqa: E402

GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
ECHO = ('Write one new problem and its solution. Respond as a JSON object with the keys "question" and '
        '"answer", and nothing else. The answer must end with #### <final number>.')


def read_gsm8k(path: Path) -> list[Pair]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Pair(r["question"], r["answer"]) for r in rows]


def corrupt(pairs: list[Pair], seed: int = 0) -> list[Pair]:
    """The junk set: each row corrupted one of four ways, in turn."""
    rng = random.Random(seed)
    out = []
    for i, p in enumerate(pairs):
        body, _, final = p.answer.rpartition("####")
        kind = i % 4
        if kind == 0:    # the prompt's scaffold echoed for an answer
            answer = f'{ECHO} {{"question": "{p.question[:60]}'
        elif kind == 1:  # cut off mid-sentence; the grammar forces an ending
            words = body.split()
            answer = " ".join(words[: max(3, len(words) // 3)]) + f" #### {rng.randint(1, 9999)}"
        elif kind == 2:  # no final-answer line
            answer = body.strip()
        else:            # padding: blank lines and code fences before the answer
            answer = "\n".join(["```", "", "```", "", "", "```"] * 3) + f"\n#### {final.strip()}"
        out.append(Pair(p.question, answer))
    return out


def demo_pairs(path: Path) -> list[Pair]:
    from storage.reports.evaluation import read_source

    source = read_source(path)
    question, answer = source.text_fields[:2]
    return [Pair(str(r[question]), str(r[answer])) for r in source.rows if r.get(question) and r.get(answer)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=GSM8K)
    parser.add_argument("--student", type=Path, help="a transformers folder (default: the converted 135M)")
    parser.add_argument("--rows", type=int, default=200, help="training rows per set")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--heldout", type=int, default=64, help="held-out rows (the end of the data file)")
    parser.add_argument("--accuracy-rows", type=int, default=0)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds: the spread between them is the noise")
    parser.add_argument("--demo", type=Path, help="an export folder of the demo (its accepted rows)")
    parser.add_argument("--gvendi-rows", type=int, default=100, help="rows per set for G-Vendi (0: skip)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)

    data = read_gsm8k(args.data)
    heldout, pool = data[-args.heldout:], data[:-args.heldout]
    sets = {"gsm8k": pool[:args.rows]}
    if args.demo:
        sets["demo"] = demo_pairs(args.demo)
    sets["junk"] = corrupt(pool[:args.rows])
    student = args.student or default_student()
    print(f"student {student} on {device_name()}; {len(heldout)} held-out rows; "
          + ", ".join(f"{k}: {len(v)} rows" for k, v in sets.items()), file=sys.stderr)

    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        settings = ProbeSettings(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                                 max_length=args.max_length, seed=seed, heldout_rows=args.heldout,
                                 accuracy_rows=args.accuracy_rows, verifier="math")
        started = time.perf_counter()
        report = run_probe(student, sets, heldout, settings).as_dict()
        report["wall_s"] = round(time.perf_counter() - started, 1)
        runs.append(report)
        print(f"seed {seed}: {report['wall_s']} s", file=sys.stderr)

    diversity = {}
    if args.gvendi_rows:
        sketcher = GradientSketcher(student, GVendiSettings(max_rows=args.gvendi_rows, max_length=args.max_length))
        diversity = {label: g_vendi(sketcher, pairs) for label, pairs in sets.items()}

    lines = ["| set | seed | train rows | held-out loss | vs untrained | accuracy | train s | s/step | "
             "s/100 rows | G-Vendi | G-Vendi s/row |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for report in runs:
        s, base = report["settings"], report["baseline"]
        lines.append(f"| (untrained) | {s['seed']} | - | {base['loss']:.4f} | - | {base['accuracy']} | - | - | - | "
                     f"- | - |")
        for r in report["results"]:
            per_step = r["train_seconds"] / r["steps"]
            per_100 = 100 * r["train_seconds"] / (r["steps"] * s["batch_size"])
            g = diversity.get(r["label"], {})
            lines.append(f"| {r['label']} | {s['seed']} | {r['train_rows']} | {r['score']['loss']:.4f} | "
                         f"{r['score']['loss'] - base['loss']:+.4f} | {r['score']['accuracy']} | "
                         f"{r['train_seconds']:.1f} | {per_step:.2f} | {per_100:.1f} | {g.get('g_vendi', '-')} | "
                         f"{g.get('g_vendi_s_per_row', '-')} |")
        lines.append(f"| scoring {base['rows']} held-out rows | {s['seed']} | | | | | {base['seconds']:.1f} s | | "
                     f"{100 * base['seconds'] / max(1, base['rows']):.1f} | | |")
    print("\n".join(lines))
    if args.json_out:
        args.json_out.write_text(json.dumps({"runs": runs, "g_vendi": diversity}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
