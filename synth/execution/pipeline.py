"""The generation pipeline of one chunk: render, call, parse, verify, judge, filter.

`run_chunk(attempts, backend, ctx) -> ChunkResult` is pure with respect to storage: it
takes plain data (the attempts and a picklable `ChunkContext`) and returns plain rows
for the catalog's `requests` and `samples` tables. It is what the local executor runs
in process and what a Ray replica runs on a remote machine; committing, deduplicating
against the dataset and the budget are the run ledger's (storage/runs/runs.py).

For a chunk of attempts, stage k of every attempt's strategy is ONE batched backend
call (k = 0, 1, ...); the answer stage samples `verifier.answer_copies` answers where
the verifier wants several (math self-consistency): first `verifier.first_wave` of them,
and the rest, in a second batch, only for the attempts whose first answers do not settle
the vote (`verifier.settled`). Then, in this order:
- parse: a reply that is not the stage's fields -> `rejected` (raw text and reason kept);
- verify (unless `verify.kind: none`): the first of the sampled answers that holds up
  becomes the sample's answer; none -> `rejected` with the first verdict's reason;
- decontaminate (`quality.decontaminate`): every candidate the heuristic filters would keep
  is looked up in the run's index of test sets (synth/decontam.py, one batch a chunk);
- judge (`quality.judge`): one batched request per chunk scores every candidate that
  the heuristic filters and the test sets would keep;
- filters, then contamination, then the judge's verdict -> `filtered` with the reason;
- the rest are `accepted` candidates with their content hash; the ledger dedups them.

Lineage: a sample row's `request_id` is the request whose text became the sample (or
failed it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from synth.backends.base import Backend, GenerationRequest, Sampling, SamplingSettings
from synth.prompting.calls import Call, call_batch
from synth.curation.decontam import DecontamIndex
from synth.ids import content_hash, stable_id, stable_seed
from synth.curation.judge import SCHEMA as JUDGE_SCHEMA, TEMPLATE as JUDGE_TEMPLATE, judge_messages, parse_judgement
from synth.prompting.parsing import parse_fields
from synth.curation.filters import Filter, FilterContext, default_filters, first_problem, prose_fields, scaffold_labels
from synth.reject import Reject
from synth.prompting.render import PromptError, Renderer, example_variables
from synth.slot import Slot
from synth.strategies import ANSWER, STRATEGIES, GenerationContext, Stage, Strategy
from synth.strategies.base import EXTRACT_TEMPLATE, SYSTEM_TEMPLATE, TEXT
from synth.verify.base import VerifierSettingsBase, VerifyCase

if TYPE_CHECKING:
    from synth.config.recipe import Judge
    from synth.task.task import Task

MAX_VERIFIED_ANSWERS = 8  # sampled answers tried against the verifier, per attempt
EXTRACT_MAX_TOKENS = 48  # the final line only: `#### 1,234.5` and a little slack


@dataclass
class Attempt:
    """One attempt at one slot, carried from render to verdict."""

    sample_id: str
    slot: Slot
    attempt: int
    known: dict[str, Any]  # fields so far: seeded, then parsed stage by stage
    answers: list[Any] = field(default_factory=list)  # every parsed answer (k for self-consistency)
    request_id: str | None = None  # the request whose text became the sample, or failed it
    raw_text: str | None = None
    reject: Reject | None = None
    status: str | None = None  # None while alive; rejected / filtered / accepted
    verified: bool | None = None
    quality: float | None = None
    judge_rationale: str | None = None
    judged_out: Reject | None = None
    copies: int = 1  # answers sampled for it (k for self-consistency, tries for code)
    agreement: float | None = None  # share of the sampled answers the verifier accepts (the majority's votes / k)
    contaminated: Reject | None = None  # copies a test item (quality.decontaminate)

    @property
    def alive(self) -> bool:
        return self.reject is None


class ChunkContext:
    """Everything a chunk needs besides the backend; cheap to pickle for a remote replica."""

    def __init__(self, run_id: str, task: "Task", seeds: Sequence[dict[str, Any]], renderer: Renderer,
                 sampling: SamplingSettings, verify: VerifierSettingsBase, filter_ctx: FilterContext,
                 judge: "Judge | None" = None, output: dict[str, str] | None = None, extract: bool = True,
                 decontam: DecontamIndex | None = None, filters: Sequence[Filter] | None = None) -> None:
        self.run_id, self.task, self.seeds = run_id, task, list(seeds)
        self.renderer, self.sampling, self.verify_settings = renderer, sampling, verify
        self.judge, self.extract, self.decontam = judge, extract, decontam
        # the recipe's filters in their order (default: every registered one) and what they read from the run
        self.filters = tuple(filters) if filters is not None else default_filters()
        self.filter_ctx = filter_ctx
        self.generation = GenerationContext(task, self.seeds, renderer, dict(output or {}))
        self.verifier = verify.build()

    @classmethod
    def from_recipe(cls, recipe: Any, seeds: Sequence[dict[str, Any]], run_id: str,
                    renderer: Renderer | None = None) -> "ChunkContext":
        q = recipe.quality
        renderer = renderer or Renderer(recipe.template_overrides())
        filter_ctx = FilterContext(question_field=recipe.task.question, prompt_markers=prompt_markers(renderer),
                                   formats=tuple(recipe.task.output_fields.items()),
                                   scaffold_labels=prompt_scaffold(renderer, recipe.task),
                                   prose_fields=prose_fields(seeds, recipe.task.output_fields),
                                   task_markers=(recipe.task.description,))
        from synth.config.decontam_sets import index_for

        g = recipe.generation
        return cls(run_id, recipe.task, seeds, renderer, recipe.backend.sampling, recipe.verify, filter_ctx, q.judge,
                   output=dict(g.output), extract=g.extract, decontam=index_for(recipe), filters=q.filter_chain())

    def first_problem(self, fields: dict[str, Any]) -> Reject | None:
        """The first of the run's filters that refuses `fields`, or None."""
        return first_problem(fields, self.filter_ctx, self.filters)

    def answer_copies(self, strategy: Strategy) -> int:
        return self.verifier.answer_copies(strategy.has_reference)

    def output_fields(self, attempt: Attempt) -> dict[str, Any]:
        return {name: attempt.known[name] for name in self.task.output_fields if name in attempt.known}


@dataclass
class ChunkResult:
    requests: list[dict[str, Any]]  # rows for `requests`
    samples: list[dict[str, Any]]  # rows for `samples`; accepted ones still to be deduplicated


@dataclass
class ChunkFailed:
    """A chunk an executor gave up on (it failed `tries` times): nothing of it is written;
    the ledger records it and leaves its slots alone for the rest of the run's start."""

    work: list[tuple[Slot, int]]
    tries: int
    error: str  # the last failure, one line
    workers: list[str] = field(default_factory=list)  # where it was tried, in order


def prompt_markers(renderer: Renderer) -> tuple[str, ...]:
    """The literal text of every generation prompt this renderer would send (overrides
    included): what the `template_text` filter must not find echoed in a sample."""
    names = sorted({SYSTEM_TEMPLATE} | {stage.template for s in STRATEGIES.values() for stage in s.stages})
    chunks: list[str] = []
    for name in names:
        try:
            chunks += [chunk for chunk in renderer.literal_text(name) if chunk.strip()]
        except PromptError:
            continue  # a strategy this renderer has no template for cannot run with it either
    return tuple(chunks)


def prompt_scaffold(renderer: Renderer, task: "Task") -> tuple[str, ...]:
    """The line labels the generation prompts write for this task (`Question:`, `Answer:`,
    `Example #:`): each template rendered with its example variables, the task's own field
    names put in (what the `scaffold_echo` gate looks for in a sample)."""
    names = {"question_field": task.question, "answer_field": task.answer}
    texts = [f"{name.capitalize()}: x" for name in task.output_fields]  # `{{ name | capitalize }}:` in templates
    for template in sorted({stage.template for s in STRATEGIES.values() for stage in s.stages}):
        try:
            variables = example_variables(template)
            texts.append(renderer.render(template, {**variables, **{k: v for k, v in names.items() if k in variables}}))
        except (PromptError, KeyError, ValueError):
            continue  # an override without examples: the field labels above still hold
    return scaffold_labels(texts)


def new_attempts(work: Sequence[tuple[Slot, int]], ctx: ChunkContext) -> list[Attempt]:
    """Attempts for (slot, attempt number) pairs; a sample id is hash(run, slot, attempt)."""
    return [Attempt(stable_id(ctx.run_id, slot.index, n), slot, n,
                    STRATEGIES[slot.strategy].seeded_fields(slot, ctx.generation)) for slot, n in work]


def run_work(work: Sequence[tuple[Slot, int]], backend: Backend, ctx: ChunkContext) -> ChunkResult:
    """`run_chunk` on fresh attempts for (slot, attempt number) pairs: what an executor runs
    (a retry starts from the pairs again, not from half-made attempts)."""
    return run_chunk(new_attempts(work, ctx), backend, ctx)


def run_chunk(attempts: Sequence[Attempt], backend: Backend, ctx: ChunkContext) -> ChunkResult:
    """Generate one chunk, stage by stage in batches, and return its rows (nothing is written)."""
    request_rows: list[dict[str, Any]] = []
    depth = max((len(STRATEGIES[a.slot.strategy].stages) for a in attempts), default=0)
    for position in range(depth):
        _run_stage(position, attempts, backend, ctx, request_rows)
    if ctx.verifier.kind != "none":
        _verify(attempts, ctx)
    if ctx.decontam is not None:
        _decontaminate(attempts, ctx)
    if ctx.judge is not None:
        _judge(attempts, backend, ctx, request_rows)
    return ChunkResult(request_rows, [_sample_row(a, ctx) for a in attempts])


def _request(attempt: Attempt, strategy: Strategy, stage: Stage, ctx: ChunkContext, copy: int) -> Call:
    parts = (attempt.sample_id, stage.name) if copy == 0 else (attempt.sample_id, stage.name, copy)
    request = GenerationRequest(key=stable_id(*parts),
                                messages=strategy.render(stage, attempt.slot, ctx.generation, attempt.known),
                                sampling=ctx.sampling.for_request(stable_seed(ctx.sampling.seed, *parts)),
                                json_schema=ctx.generation.schema_for(stage),
                                expects=tuple(ctx.generation.fields_for(stage)))
    return Call(request, stage.name, stage.template, ctx.renderer.template_hash(stage.template), run_id=ctx.run_id,
                strategy=attempt.slot.strategy, leaf_id=attempt.slot.leaf_id, sample_id=attempt.sample_id)


def _run_stage(position: int, attempts: Sequence[Attempt], backend: Backend, ctx: ChunkContext,
               request_rows: list[dict[str, Any]]) -> None:
    calls: list[tuple[Attempt, Stage, Call]] = []
    rest: list[tuple[Attempt, Stage, Strategy, int]] = []  # answers sampled only if the first ones disagree
    for attempt in attempts:
        strategy = STRATEGIES[attempt.slot.strategy]
        if not attempt.alive or position >= len(strategy.stages):
            continue
        stage = strategy.stages[position]
        copies = first = 1
        if stage.writes == ANSWER:
            copies = attempt.copies = ctx.answer_copies(strategy)
            first = ctx.verifier.first_wave(strategy.has_reference)
            if first < copies:
                rest.append((attempt, stage, strategy, first))
        calls += [(attempt, stage, _request(attempt, strategy, stage, ctx, copy)) for copy in range(first)]
    answered, parsed = _call_and_parse(calls, backend, ctx, request_rows)
    if rest:  # a vote the first answers settle needs no more (the label would not change)
        answers: dict[str, list[str]] = {}  # sample -> its first answers that parsed
        for (attempt, _, _), value in zip(calls, parsed):
            if not isinstance(value, Reject):
                answers.setdefault(attempt.sample_id, []).append(str(value[ctx.task.answer]))
        more = []
        for attempt, stage, strategy, first in rest:
            if ctx.verifier.settled(answers.get(attempt.sample_id, []), first):
                attempt.copies = first
            else:
                more += [(attempt, stage, _request(attempt, strategy, stage, ctx, copy))
                         for copy in range(first, attempt.copies)]
        answered_more, parsed_more = _call_and_parse(more, backend, ctx, request_rows)
        calls, answered, parsed = calls + more, answered + answered_more, parsed + parsed_more
    outputs: dict[str, list[tuple[str, str, Any]]] = {}  # sample -> (request id, raw text, parsed or Reject)
    by_id: dict[str, tuple[Attempt, Stage]] = {}
    for (attempt, stage, call), (result, _), value in zip(calls, answered, parsed):
        outputs.setdefault(attempt.sample_id, []).append((call.request.key, result.text, value))
        by_id[attempt.sample_id] = (attempt, stage)
    for sample_id, tried in outputs.items():
        attempt, stage = by_id[sample_id]
        good = [entry for entry in tried if not isinstance(entry[2], Reject)]
        attempt.request_id, attempt.raw_text, kept = (good or tried)[0]
        if not good:
            attempt.reject, attempt.status = kept, "rejected"
            continue
        attempt.known.update(kept)
        if stage.writes == ANSWER:
            attempt.answers = [value[ctx.task.answer] for _, _, value in good]


def _call_and_parse(calls: Sequence[tuple[Attempt, Stage, Call]], backend: Backend, ctx: ChunkContext,
                    request_rows: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    """One batched call for `calls`, each reply parsed (with its extraction turn): the
    (result, request row) pairs and the parsed fields or Rejects, in order."""
    if not calls:
        return [], []
    answered = call_batch(backend, [call for _, _, call in calls])
    parsed: list[Any] = []
    for (attempt, stage, call), (result, row) in zip(calls, answered):
        request_rows.append(row)
        parsed.append(Reject("backend_error", result.error[:500]) if result.error is not None
                      else ctx.generation.parse(stage, result.text, result.finish_reason))
    if ctx.extract:
        _extract_endings(calls, [result for result, _ in answered], parsed, backend, ctx, request_rows)
    return answered, parsed


def _extract_endings(calls: Sequence[tuple[Attempt, Stage, Call]], results: Sequence[Any], parsed: list[Any],
                     backend: Backend, ctx: ChunkContext, request_rows: list[dict[str, Any]]) -> None:
    """Answer extraction (Kojima et al. 2022): a free-text reply whose field must end in a set
    form (`#### 72`) and does not gets one short follow-up turn on the same conversation that
    asks only for that final line, in one batch; a line in the form is appended to the field.
    Each follow-up is its own request (stage `<stage>_extract`), with its tokens."""
    follow: list[tuple[int, str, Any, Call]] = []
    for i, ((attempt, stage, call), result, value) in enumerate(zip(calls, results, parsed)):
        if isinstance(value, Reject) or ctx.generation.output_mode(stage) != TEXT:
            continue
        (name, spec), = ctx.generation.fields_for(stage).items()
        if not spec.missing_ending(str(value[name])):
            continue
        messages = (*call.request.messages, {"role": "assistant", "content": result.text},
                    {"role": "user", "content": ctx.renderer.render(EXTRACT_TEMPLATE, {
                        "field": name, "ending": spec.ending or spec.description})})
        key = stable_id(call.request.key, "extract")
        request = GenerationRequest(key=key, messages=messages,
                                    sampling=Sampling(temperature=0.0, top_p=1.0, max_tokens=EXTRACT_MAX_TOKENS,
                                                      seed=stable_seed(ctx.sampling.seed, key)))
        follow.append((i, name, spec, Call(request, f"{stage.name}_extract", EXTRACT_TEMPLATE,
                                           ctx.renderer.template_hash(EXTRACT_TEMPLATE), run_id=ctx.run_id,
                                           strategy=attempt.slot.strategy, leaf_id=attempt.slot.leaf_id,
                                           sample_id=attempt.sample_id)))
    for (i, name, spec, _), (result, row) in zip(follow, call_batch(backend, [c for *_, c in follow])):
        request_rows.append(row)
        line = spec.ending_line(result.text) if result.error is None else None
        if line is not None:
            parsed[i] = {**parsed[i], name: f"{str(parsed[i][name]).rstrip()}\n{line}"}


def _verify(attempts: Sequence[Attempt], ctx: ChunkContext) -> None:
    """The recipe's verifier on every parsed attempt; the first sampled answer that holds up
    wins. Each attempt records its agreement: the share of its sampled answers the verifier
    accepts (for math self-consistency, the majority's votes over the k sampled)."""
    task, verifier = ctx.task, ctx.verifier
    items: list[tuple[Attempt, dict[str, Any], Any]] = []
    for attempt in attempts:
        if not attempt.alive:
            continue
        strategy = STRATEGIES[attempt.slot.strategy]
        case = VerifyCase(fields=dict(attempt.known), answer_field=task.answer, question_field=task.question,
                          answers=tuple(attempt.answers), seed=ctx.generation.seed(attempt.slot.seed_row),
                          reference=strategy.reference_answer(attempt.slot, ctx.generation), sampled=attempt.copies)
        context = verifier.context(case)
        for answer in (attempt.answers or [attempt.known.get(task.answer)])[:MAX_VERIFIED_ANSWERS]:
            items.append((attempt, {**attempt.known, task.answer: answer}, context))
    verdicts = verifier.verify_many([(fields, context) for _, fields, context in items])
    first_failure: dict[str, Reject] = {}
    passes: dict[str, int] = {}
    for (attempt, fields, _), verdict in zip(items, verdicts):
        if "agreement" in verdict.detail:
            attempt.agreement = float(verdict.detail["agreement"])
        passes[attempt.sample_id] = passes.get(attempt.sample_id, 0) + int(verdict.ok)
        if attempt.verified:
            continue  # an earlier answer of this attempt already passed
        if verdict.ok:
            attempt.verified, attempt.known = True, fields
        else:
            first_failure.setdefault(attempt.sample_id, verdict.reject)
    for attempt in attempts:
        if attempt.alive and attempt.agreement is None and attempt.sample_id in passes:
            attempt.agreement = passes[attempt.sample_id] / max(attempt.copies, 1)
        if attempt.alive and not attempt.verified and attempt.sample_id in first_failure:
            attempt.reject, attempt.status, attempt.verified = first_failure[attempt.sample_id], "rejected", False


def _decontaminate(attempts: Sequence[Attempt], ctx: ChunkContext) -> None:
    """Look every candidate the filters would keep up in the test sets' index, as one batch."""
    kept = [a for a in attempts if a.alive and not ctx.first_problem(ctx.output_fields(a))]
    matches = ctx.decontam.check_many([ctx.output_fields(a) for a in kept], ctx.task.question)
    for attempt, match in zip(kept, matches):
        if match is not None:
            attempt.contaminated = match.reject()


def _judge(attempts: Sequence[Attempt], backend: Backend, ctx: ChunkContext,
           request_rows: list[dict[str, Any]]) -> None:
    """Score every candidate that passed parsing, verification and the heuristic filters, in
    one batch; the score and rationale go on the sample, the request into the catalog."""
    settings = ctx.judge
    template_hash = ctx.renderer.template_hash(JUDGE_TEMPLATE)
    calls: list[tuple[Attempt, Call]] = []
    for attempt in attempts:
        if not attempt.alive:
            continue
        fields = ctx.output_fields(attempt)
        if attempt.contaminated or ctx.first_problem(fields):
            continue  # filtered anyway: not worth a judge request
        key = stable_id(attempt.sample_id, "judge")
        request = GenerationRequest(
            key=key, messages=judge_messages(ctx.renderer, ctx.task.description, fields, attempt.slot.constraints),
            sampling=SamplingSettings(temperature=settings.temperature, top_p=1.0, max_tokens=settings.max_tokens)
            .for_request(stable_seed(ctx.sampling.seed, key)),
            json_schema=JUDGE_SCHEMA)
        calls.append((attempt, Call(request, "judge", JUDGE_TEMPLATE, template_hash, run_id=ctx.run_id,
                                    strategy=attempt.slot.strategy, leaf_id=attempt.slot.leaf_id,
                                    sample_id=attempt.sample_id)))
    for (attempt, _), (result, row) in zip(calls, call_batch(backend, [call for _, call in calls])):
        request_rows.append(row)
        verdict = (Reject("judge_error", result.error[:500]) if result.error is not None
                   else parse_judgement(result.text, result.finish_reason))
        if isinstance(verdict, Reject):
            attempt.judge_rationale = f"judge failed: {verdict}"
            if settings.on_failure == "filter":
                attempt.judged_out = verdict
            continue
        score, rationale = verdict
        attempt.quality, attempt.judge_rationale = float(score), rationale
        if score < settings.min_score:
            attempt.judged_out = Reject("judge_score", f"{score} < {settings.min_score}: {rationale[:200]}")


def _sample_row(attempt: Attempt, ctx: ChunkContext) -> dict[str, Any]:
    """The sample row: rejected, filtered, or an accepted candidate with its content hash."""
    slot = attempt.slot
    row = {"sample_id": attempt.sample_id, "run_id": ctx.run_id, "slot": slot.index, "attempt": attempt.attempt,
           "leaf_id": slot.leaf_id, "leaf_path": [list(pair) for pair in slot.constraints],
           "strategy": slot.strategy, "seed_row": slot.seed_row, "seed_key": slot.seed_key,
           "request_id": attempt.request_id,
           "verified": attempt.verified, "quality": attempt.quality, "judge_rationale": attempt.judge_rationale,
           "agreement": attempt.agreement, "n_solutions": attempt.copies if attempt.agreement is not None else None}
    if attempt.reject is not None:
        return {**row, "status": "rejected", "reason": str(attempt.reject), "raw_text": attempt.raw_text,
                "fields": attempt.known or None}
    fields = ctx.output_fields(attempt)
    problem = ctx.first_problem(fields) or attempt.contaminated or attempt.judged_out
    if problem is not None:
        attempt.status = "filtered"
        return {**row, "fields": fields, "status": "filtered", "reason": str(problem), "raw_text": attempt.raw_text}
    attempt.status = "accepted"
    return {**row, "fields": fields, "status": "accepted", "content_hash": content_hash(fields)}


def dedup_text(row: dict[str, Any], task: "Task") -> str:
    """The text of a sample row that near-duplicates are looked for in (its strategy's field)."""
    strategy = STRATEGIES.get(row["strategy"])
    name = strategy.dedup_field(task) if strategy is not None else task.question
    fields = row.get("fields") or {}
    return str(fields.get(name, ""))
