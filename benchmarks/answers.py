"""How the answer is asked for, measured: JSON + grammar, JSON, free text, free text + extraction.

On GSM8K train problems held out of the demo's seeds (their own answers are the references),
each embedded tier answers every problem once per output mode through the factory's own
chunk pipeline (`synth.execution.pipeline.run_work`: the recipe's prompt with two worked examples,
temperature 0, the gates of synth/curation/filters.py), with `verify: none` so that acceptance is
the gates' alone. Per mode and tier it prints:

- raw accuracy: the final number of the model's reply (however it was asked) equals the
  reference's, accepted or not;
- accepted: the share of attempts the parsing and the gates let through;
- precision: the share of accepted answers that are correct (what the gates buy);
- correct accepted: accepted and correct, out of all problems (what a run keeps);
- tokens/s of the answer stage (completion tokens over the stage's wall time).

`text` and `text+extract` come from one pass: `text` is the reply as the answer stage
gave it, `text+extract` adds the follow-up turn where the reply lacked `#### N` (same
requests, temperature 0, so running it twice would repeat the same replies).

    python benchmarks/answers.py --models embedded,embedded-1.5b --n 12
    python benchmarks/answers.py --models embedded --n 40 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synth.config.recipe import load_recipe  # noqa: E402
from synth.verify.math import extract_final_number, same_number  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
MODES = {  # name -> (answer output mode, grammar patterns, extraction)
    "json+grammar": ("json", True, False),
    "json": ("json", False, False),
    "text+extract": ("text", True, True),
}


def held_out(n: int, seed_file: Path) -> list[dict]:
    seen = {json.loads(line)["question"] for line in seed_file.open()}
    rows = [json.loads(line) for line in DATA.open()]
    return [r for r in rows[-(4 * n + 50):] if r["question"] not in seen][-n:]


def recipe_for(model: str, mode: str, patterns: bool, extract: bool, folder: Path, threads: int | None):
    base = load_recipe(ROOT / "recipes" / "gsm8k.yaml")
    data = base.model_dump(mode="json", exclude={"base_dir"})
    data["generation"].update(strategy="answer_augmentation", examples_per_prompt=2, output={"answer": mode},
                              extract=extract)
    data["backend"].update(model=model, grammar_patterns=patterns, n_threads=threads,
                           sampling={"temperature": 0.0, "top_p": 1.0, "max_tokens": 320, "seed": 7})
    data["verify"] = {"kind": "none"}
    data["tree"] = None
    data["catalog"] = str(folder / "catalog.duckdb")
    from synth.config.recipe import parse_recipe

    return parse_recipe(data, base_dir=base.base_dir)


def correct(text: str, reference: str) -> bool:
    got, want = extract_final_number(text or ""), extract_final_number(reference)
    return got is not None and want is not None and same_number(got, want)


def measure(model: str, mode_name: str, problems: list[dict], threads: int | None, parallel: int) -> list[dict]:
    from synth.execution.pipeline import ChunkContext, run_work
    from synth.slot import Slot

    mode, patterns, extract = MODES[mode_name]
    with tempfile.TemporaryDirectory() as folder:
        recipe = recipe_for(model, mode, patterns, extract, Path(folder), threads)
        # the recipe's own backend: `parallel` sequences decoded together (1: in process, one stream)
        backend = recipe.backend.model_copy(update={"parallel": parallel, "n_ctx": 2048}).build()
        backend.load()
        calls: list[float] = []  # wall seconds of each batched call: the answer stage, then extraction
        generate = backend.generate

        def timed(requests):
            began = time.perf_counter()
            try:
                return generate(requests)
            finally:
                calls.append(time.perf_counter() - began)

        backend.generate = timed
        ctx = ChunkContext.from_recipe(recipe, problems, "bench")
        n = len(problems)
        # examples: the next two problems of the held-out set (never the one being answered)
        work = [(Slot(index=i, strategy="answer_augmentation", seed_row=i,
                      example_rows=((i + 1) % n, (i + 2) % n)), 0) for i in range(n)]
        started = time.perf_counter()
        try:
            result = run_work(work, backend, ctx)
        finally:
            backend.close()
        wall = time.perf_counter() - started
    answer_rows = [r for r in result.requests if r["stage"] == "answer"]
    answer_wall = calls[0]  # the answer stage's one batched call
    tokens = sum(r["completion_tokens"] for r in answer_rows)
    extra = [r for r in result.requests if r["stage"] == "answer_extract"]
    rows = []
    if mode_name == "text+extract":  # the same pass, read without the extraction turn
        from synth.strategies import STRATEGIES

        plain = []
        for sample, request in zip(result.samples, answer_rows):
            stage = STRATEGIES["answer_augmentation"].stages[0]
            parsed = ctx.generation.parse(stage, request["raw_text"] or "", request["finish_reason"])
            ok = not hasattr(parsed, "reason")
            fields = {**{"question": problems[sample["seed_row"]]["question"]}, **(parsed if ok else {})}
            accepted = ok and ctx.first_problem(fields) is None
            plain.append((request["raw_text"], accepted, fields.get("answer", "")))
        rows.append(_row(model, "text", problems, result.samples, plain, tokens, answer_wall, wall, 0))
    mine = [(req["raw_text"], s["status"] == "accepted", (s.get("fields") or {}).get("answer", ""))
            for s, req in zip(result.samples, answer_rows)]
    rows.append(_row(model, mode_name, problems, result.samples, mine, tokens, answer_wall, wall, len(extra)))
    return rows


def _row(model, mode, problems, samples, outcomes, tokens, answer_wall, wall, extractions) -> dict:
    n = len(problems)
    refs = [problems[s["seed_row"]]["answer"] for s in samples]
    raw_ok = [correct(raw or "", ref) for (raw, _, _), ref in zip(outcomes, refs)]
    acc = [accepted for _, accepted, _ in outcomes]
    acc_ok = [accepted and correct(answer, ref) for (_, accepted, answer), ref in zip(outcomes, refs)]
    return {"model": model, "mode": mode, "n": n, "raw_correct": sum(raw_ok), "accepted": sum(acc),
            "accepted_correct": sum(acc_ok), "precision": sum(acc_ok) / sum(acc) if sum(acc) else None,
            "raw_accuracy": sum(raw_ok) / n, "tokens": tokens, "tokens_per_s": tokens / answer_wall if answer_wall else None,
            "extractions": extractions, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="embedded,embedded-1.5b")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--parallel", type=int, default=1, help="sequences decoded together (1: in process)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    problems = held_out(args.n, ROOT / "recipes" / "seeds" / "gsm8k_120.jsonl")
    for model in args.models.split(","):
        for mode in args.modes.split(","):
            for row in measure(model, mode, problems, args.threads, args.parallel):
                print(json.dumps(row) if args.json else _line(row), flush=True)


def _line(r: dict) -> str:
    precision = f"{r['precision']:.2f}" if r["precision"] is not None else "-"
    speed = f"{r['tokens_per_s']:.1f}" if r["tokens_per_s"] else "-"
    return (f"| {r['model']} | {r['mode']} | {r['raw_correct']}/{r['n']} | {r['accepted']}/{r['n']} | {precision} "
            f"| {r['accepted_correct']}/{r['n']} | {speed} | {r['extractions']} |")


if __name__ == "__main__":
    main()
