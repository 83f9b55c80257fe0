"""The recipe: the whole job in one YAML file, validated before anything is written.

Unknown keys are refused at every level. A broken recipe raises `RecipeError`, whose
message names each bad field and says what to write there; the command line turns it
into exit code 2.

Paths: inputs (seeds, tree files, templates) are resolved against the recipe's own
folder, so a recipe and its seed files travel together; outputs (catalog, export) are
resolved against the working directory, like any other command-line tool's outputs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator,
                      model_serializer, model_validator)

from synth.backends import BACKENDS, DEFAULT_KIND as DEFAULT_BACKEND, BackendSettingsBase
from synth.config.cluster import ClusterSettings
from synth.errors import BadInput
from synth.curation.filters import FILTERS, Filter, default_filters
from synth.strategies import DEFAULT_KIND as DEFAULT_STRATEGY, STRATEGIES
from synth.task.task import Task
from synth.verify import DEFAULT_KIND as DEFAULT_VERIFIER, VERIFIERS, VerifierSettingsBase


class RecipeError(BadInput, ValueError):
    """A recipe that cannot run; the message is meant for the person who wrote it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Seeds(_Strict):
    path: Path
    format: Literal["auto", "jsonl", "parquet", "csv", "datasets"] = "auto"
    fields: dict[str, str] = Field(default_factory=dict)  # output field -> column in the seed file
    limit: int | None = Field(default=None, gt=0)


class TreeSettings(_Strict):
    enabled: bool = True
    file: Path | None = None  # a tree exported with `synth tree export`, used instead of building one
    max_depth: int = Field(default=2, ge=1, le=8)
    pivots_per_node: int = Field(default=6, ge=2, le=50)
    max_values: int = Field(default=6, ge=2, le=50)
    infinite_threshold: int = Field(default=10, ge=2, le=1000)
    max_leaves: int = Field(default=12, ge=1, le=100000)
    max_retries: int = Field(default=2, ge=0, le=10)
    seed: int = 0
    leaf_weights: dict[str, float] | None = None  # leaf path label -> weight; default uniform

    @model_validator(mode="after")
    def _infinite_above_values(self) -> "TreeSettings":
        if self.infinite_threshold < self.max_values:
            raise ValueError(
                f"infinite_threshold ({self.infinite_threshold}) must be >= max_values ({self.max_values}); "
                "a dimension is 'infinite' only when it has more values than a node may have children"
            )
        return self


class Balance(_Strict):
    """The target distribution over the tree's leaves (synth/balance.py), and optionally an
    existing dataset to rebalance: its rows are classified onto the tree and only the
    leaves it under-fills are generated."""

    dimension: str | None = None  # balance over the values of this tree dimension
    weights: dict[str, float] | None = None  # value of `dimension` -> share; default uniform
    min_per_leaf: int = Field(default=0, ge=0)
    max_per_leaf: int | None = Field(default=None, gt=0)
    tolerance: float = Field(default=0.1, ge=0, lt=1)  # a leaf within (1 - tolerance) x target is done
    dataset: Seeds | None = None  # an existing dataset to rebalance (same fields as `seeds`)
    # rows to leaves: the LLM level by level, or the nearest leaf description (synth/embed_assign.py)
    assign: Literal["llm", "embedding"] = "llm"

    @model_validator(mode="after")
    def _consistent(self) -> "Balance":
        if self.max_per_leaf is not None and self.max_per_leaf < self.min_per_leaf:
            raise ValueError(f"max_per_leaf ({self.max_per_leaf}) must be >= min_per_leaf ({self.min_per_leaf})")
        if self.weights and self.dimension is None:
            raise ValueError("weights are shares over a dimension's values: also write `dimension: <name>` "
                             "(per-leaf weights go in tree.leaf_weights)")
        for value, weight in (self.weights or {}).items():
            if weight < 0:
                raise ValueError(f"weights.{value} must be >= 0")
        return self


class Generation(_Strict):
    target: int = Field(default=24, gt=0, le=10_000_000)  # accepted samples wanted
    budget: int | None = Field(default=None, gt=0)  # teacher requests allowed; default 4 x target
    strategy: str = DEFAULT_STRATEGY  # one of STRATEGIES, or "auto"
    strategy_weights: dict[str, float] | None = None  # mix strategies instead of one
    examples_per_prompt: int = Field(default=3, ge=0, le=20)
    chunk_size: int = Field(default=64, gt=0, le=100_000)  # requests per backend call and commit
    max_rounds: int = Field(default=3, ge=1, le=50)  # generate-missing rounds before giving up
    # growth: each `synth run --grow-by N` (or scheduled run) raises the dataset's target by N
    grow_by: int | None = Field(default=None, gt=0)
    max_target: int | None = Field(default=None, gt=0)  # growth stops here
    # per stage (question / answer): `text` (the reply is the field, its format checked after),
    # `json` (one object, schema-constrained where the backend can), `auto` (text for a stage
    # that writes one field, json for several); docs/quality.md has the measurement behind it
    output: dict[Literal["question", "answer"], Literal["auto", "text", "json"]] = Field(default_factory=dict)
    # a free-text reply that lacks its field's required ending (an end-anchored `pattern`) gets
    # one follow-up turn asking only for that final line
    extract: bool = True

    @model_validator(mode="after")
    def _growth(self) -> "Generation":
        if self.max_target is not None and self.max_target < self.target:
            raise ValueError(f"max_target ({self.max_target}) must be >= target ({self.target})")
        return self

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        if value != "auto" and value not in STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}; write 'auto' or one of: {', '.join(STRATEGIES)}")
        return value

    def strategies_used(self) -> set[str]:
        """Every strategy this generation may use (`auto` may pick any)."""
        if self.strategy_weights:
            return {s for s, w in self.strategy_weights.items() if w > 0}
        return set(STRATEGIES) if self.strategy == "auto" else {self.strategy}

    @field_validator("strategy_weights")
    @classmethod
    def _weights(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return value
        for name, weight in value.items():
            if name not in STRATEGIES:
                raise ValueError(f"unknown strategy {name!r}; write weights for: {', '.join(STRATEGIES)}")
            if weight < 0:
                raise ValueError(f"weight of {name} must be >= 0")
        if sum(value.values()) <= 0:
            raise ValueError("at least one strategy weight must be > 0")
        return value

    @property
    def request_budget(self) -> int:
        return self.budget if self.budget is not None else 4 * self.target


class Judge(_Strict):
    """An LLM judge scores every candidate 1-5 (prompts/judge/score.jinja2); below min_score
    it is filtered. Uses the run's backend, one batched request per chunk."""

    min_score: int = Field(default=3, ge=1, le=5)
    max_tokens: int = Field(default=160, gt=0, le=4096)
    temperature: float = Field(default=0.0, ge=0, le=2)
    # a reply that is not a score: filter the sample (strict), or keep it unjudged
    on_failure: Literal["filter", "keep"] = "filter"


def _of_kind(value: Any, registry: dict[str, Any], what: str, default: str | None = None) -> Any:
    """A mapping with `kind` (without one: `default`) as that kind's settings class, looked up
    in `registry` when the recipe is read, so a kind registered later is found too; an unknown
    or missing kind is named, with the choices. Its own errors keep their place (`backend.n_ctx`)."""
    if not isinstance(value, dict):
        return value  # the field's own check names it
    kind = value.get("kind", default)
    if not isinstance(kind, str) or kind not in registry:
        raise ValueError(f"kind: {f'unknown {what} {kind!r}' if kind else 'required'}; "
                         f"write one of: {', '.join(registry)}")
    return registry[kind].model_validate({**value, "kind": kind})


def _filter_entry(value: Any) -> Any:
    """One `quality.filters` entry, a kind or `{kind: ..., settings}`, as its filter."""
    return _of_kind({"kind": value} if isinstance(value, str) else value, FILTERS, "filter")


# a filter as the recipe lists it; dumped with its own settings, not only the base's
FilterEntry = Annotated[SerializeAsAny[Filter], BeforeValidator(_filter_entry)]
_SHORTHANDS = {"min_chars": ("length", "min_chars"), "max_chars": ("length", "max_chars"),
               "max_repetition": ("repetition", "max_share")}  # old keys -> the filter setting they are


class Quality(_Strict):
    # the heuristic filters, in the order they run (synth/curation/filters.py `FILTERS`): a kind, or
    # `{kind: ..., <its settings>, enabled: false}`; a filter left out does not run. Without the
    # list: every filter in the registry's order, `min_chars`, `max_chars`, `max_repetition` below
    # setting the length and repetition filters (with the list they go in those entries)
    filters: list[FilterEntry] | None = None
    min_chars: int = Field(default=8, ge=0)
    max_chars: int = Field(default=8000, gt=0)
    near_dup_threshold: float = Field(default=0.85, gt=0, le=1)
    # embedding cosine at which a sample repeats an earlier one in other words (synth/semantic.py)
    semantic_dup_threshold: float | None = Field(default=None, gt=0, le=1)
    # share of repeated 4-word phrases above which a field counts as a loop (1 turns it off)
    max_repetition: float = Field(default=0.75, gt=0, le=1)
    judge: Judge | None = None  # `judge: {}` turns it on with the defaults
    # benchmark test sets generated rows must not copy (synth/decontam.py): paths (read with the
    # seeds' field mapping) or `{path, fields, format}`; with a cosine, also by embedding
    decontaminate: list[Seeds | Path] = Field(default_factory=list)
    decontaminate_cosine: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _bounds(self) -> "Quality":
        if self.max_chars <= self.min_chars:
            raise ValueError(f"max_chars ({self.max_chars}) must be greater than min_chars ({self.min_chars})")
        if self.decontaminate_cosine is not None and not self.decontaminate:
            raise ValueError("decontaminate_cosine compares with test sets: list them in `decontaminate:` too")
        if self.filters is not None:
            for key in (k for k in _SHORTHANDS if k in self.model_fields_set):
                kind, setting = _SHORTHANDS[key]
                raise ValueError(f"{key} sets the {kind} filter of a recipe without `filters:`; with the list, "
                                 f"write it in that entry: `- {{kind: {kind}, {setting}: "
                                 f"{getattr(self, key)}}}`")
        return self

    @field_validator("filters")
    @classmethod
    def _each_once(cls, value: list[Filter] | None) -> list[Filter] | None:
        kinds = [entry.kind for entry in value or ()]
        twice = sorted({kind for kind in kinds if kinds.count(kind) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed more than once: list each filter once, where it should run")
        return value

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        """Without a list, the recipe dumps (and hashes: its run id) as before the list existed;
        with one, the older keys mean nothing and are left out, so the dump reads back."""
        data = handler(self)
        for key in ("filters",) if self.filters is None else _SHORTHANDS:
            data.pop(key, None)
        return data

    def filter_chain(self) -> tuple[Filter, ...]:
        """The filters a run applies, in order: the recipe's list less those switched off, else
        every registered filter with the length and repetition settings of the keys above."""
        if self.filters is not None:
            return tuple(entry for entry in self.filters if entry.enabled)
        settings: dict[str, dict[str, Any]] = {}
        for key, (kind, setting) in _SHORTHANDS.items():
            settings.setdefault(kind, {})[setting] = getattr(self, key)
        return default_filters(settings)


class Export(_Strict):
    dir: Path = Path("out")
    # exporters by name (storage/publish/exporters.py: parquet, jsonl, save_to_disk, hub, ...); the pre-flight
    # checks the names; `hub` (added by hub_repo) pushes the parquet shards and the card
    formats: list[str] = Field(default_factory=lambda: ["parquet", "jsonl"])
    test_fraction: float = Field(default=0.0, ge=0, lt=1)
    lineage: bool = True  # include leaf, strategy, seed row and request columns
    # publish each new version to this Hub dataset repo (token from HF_TOKEN), tagged v1, v2, ...
    hub_repo: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
    private: bool = False


class Reuse(_Strict):
    """Which earlier contributions to the dataset this run counts (and keeps in its export).
    By default every accepted sample the dataset holds counts, whatever made it."""

    fresh: bool = False  # count none: a clean start (earlier samples stay in the catalog)
    exclude_models: list[str] = Field(default_factory=list)  # as the catalog records them (`synth stats`)
    exclude_templates: list[str] = Field(default_factory=list)  # template hashes (requests.template_hash)
    exclude_runs: list[str] = Field(default_factory=list)

    @property
    def excludes_anything(self) -> bool:
        return self.fresh or bool(self.exclude_models or self.exclude_templates or self.exclude_runs)


def _by_kind(registry: dict[str, Any], default: str, what: str) -> BeforeValidator:
    """A `backend:` or `verify:` section as its kind's settings class (`_of_kind`)."""
    return BeforeValidator(lambda value: _of_kind(value, registry, what, default))


# a section as its kind's settings, dumped with its own fields, not only the base's
BackendEntry = Annotated[SerializeAsAny[BackendSettingsBase], _by_kind(BACKENDS, DEFAULT_BACKEND, "backend")]
VerifyEntry = Annotated[SerializeAsAny[VerifierSettingsBase], _by_kind(VERIFIERS, DEFAULT_VERIFIER, "verifier")]


class Recipe(_Strict):
    task: Task
    # the dataset this recipe grows (default: task.name); every run of it is one contribution
    dataset: str | None = Field(default=None, min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    reuse: Reuse = Field(default_factory=Reuse)
    seeds: Seeds | None = None
    generation: Generation = Field(default_factory=Generation)
    backend: BackendEntry = Field(default_factory=lambda: BACKENDS[DEFAULT_BACKEND]())
    tree: TreeSettings | None = None
    balance: Balance = Field(default_factory=Balance)
    verify: VerifyEntry = Field(default_factory=lambda: VERIFIERS[DEFAULT_VERIFIER]())
    quality: Quality = Field(default_factory=Quality)
    # Replace a built-in prompt with your own file, e.g. {"generate/new_question.jinja2": my_q.jinja2};
    # user templates render in the same sandbox, with the same variables.
    templates: dict[str, Path] = Field(default_factory=dict)
    catalog: Path = Path("data/catalog.duckdb")
    export: Export = Field(default_factory=Export)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)  # where it runs: not in the hash
    # where the recipe file lives; inputs are resolved against it (not part of the hash)
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _cross_checks(self) -> "Recipe":
        if self.seeds is not None:
            for out_field in self.seeds.fields:
                if out_field not in self.task.output_fields:
                    raise ValueError(
                        f"seeds.fields maps {out_field!r}, which is not one of task.output_fields "
                        f"({', '.join(self.task.output_fields)})"
                    )
        gen = self.generation
        fixed = gen.strategy_weights or gen.strategy != "auto"  # auto picks new_question without seeds
        needs_seeds = sorted(s for s in gen.strategies_used() if STRATEGIES[s].needs_seed) if fixed else []
        if needs_seeds and self.seeds is None:
            raise ValueError(f"strategy {needs_seeds[0]} rewrites seed rows: add a `seeds:` section")
        question_fields = [n for n in self.task.output_fields if n != self.task.answer]
        if gen.output.get("question") == "text" and len(question_fields) > 1:
            raise ValueError(f"generation.output.question: text carries one field, the question stage writes "
                             f"{len(question_fields)} ({', '.join(question_fields)}): write json or auto")
        return self

    def resolve_input(self, path: Path) -> Path:
        return path if path.is_absolute() else (self.base_dir / path)

    @property
    def dataset_name(self) -> str:
        return self.dataset or self.task.name

    def identity(self) -> dict[str, Any]:
        """What defines a run: everything except where outputs go, where it runs and how growth
        is scheduled (user templates by content)."""
        data = self.model_dump(mode="json", exclude={"catalog", "export", "cluster", "base_dir", "templates"})
        data["generation"] = {k: v for k, v in data["generation"].items() if k not in ("grow_by", "max_target")}
        if self.templates:
            data["templates"] = {name: hashlib.sha256(self.resolve_input(path).read_bytes()).hexdigest()[:16]
                                 for name, path in sorted(self.templates.items())}
        return data

    def template_overrides(self) -> dict[str, str]:
        return {name: self.resolve_input(path).read_text(encoding="utf-8") for name, path in self.templates.items()}

    def hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def base_hash(self) -> str:
        """The run's hash without its target: the growth steps of one recipe share it."""
        data = self.identity()
        data["generation"] = {k: v for k, v in data["generation"].items() if k not in ("target", "budget")}
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_target(self, target: int) -> "Recipe":
        """This recipe aiming at `target` accepted samples (a budget left implicit follows it)."""
        return self.model_copy(update={"generation": self.generation.model_copy(update={"target": target})})


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _hint(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    loc = err.get("loc", ())
    if kind == "extra_forbidden":
        return f"unknown key {loc[-1]!r}: remove it or check its spelling"
    if kind == "missing":
        return "required: add this key"
    msg = err.get("msg", "invalid value")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind in {"int_parsing", "int_type", "int_from_float"}:
        return f"{msg}: write a whole number, e.g. 100"
    if kind in {"float_parsing", "float_type"}:
        return f"{msg}: write a number, e.g. 0.7"
    if kind in {"bool_parsing", "bool_type"}:
        return f"{msg}: write true or false"
    if kind == "literal_error":
        return msg
    if kind in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
        return msg
    if kind in {"dict_type", "model_type", "model_attributes_type"}:
        return f"{msg}: write a mapping of `key: value` lines here"
    return msg


def format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"{source}: the recipe is not valid ({error.error_count()} problem(s)):"]
    for err in error.errors():
        where, hint = _location(tuple(err.get("loc", ()))), _hint(err)
        if hint.startswith("kind: "):  # raised for the section, about its `kind` key
            where, hint = f"{where}.kind", hint[len("kind: "):]
        lines.append(f"  - {where}: {hint}")
    return "\n".join(lines)


def parse_recipe(data: Any, source: str = "<recipe>", base_dir: Path | None = None) -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping (key: value lines), got {type(data).__name__}")
    if "base_dir" in data:
        raise RecipeError(f"{source}: base_dir: unknown key 'base_dir': remove it or check its spelling")
    try:
        recipe = Recipe.model_validate({**data, "base_dir": base_dir or Path(".")})
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, source)) from None
    check_inputs(recipe, source)
    return recipe


def check_inputs(recipe: Recipe, source: str) -> None:
    """Input files must exist before anything runs."""
    problems = []
    if recipe.seeds is not None:
        path = recipe.resolve_input(recipe.seeds.path)
        if not path.exists():
            problems.append(f"  - seeds.path: no file or folder at {path}: write the path of a JSONL, Parquet, "
                            "CSV file or a saved `datasets` folder, relative to the recipe")
    if recipe.balance.dataset is not None:
        path = recipe.resolve_input(recipe.balance.dataset.path)
        if not path.exists():
            problems.append(f"  - balance.dataset.path: no file or folder at {path}: write the path of the JSONL, "
                            "Parquet, CSV file or saved `datasets` folder to rebalance, relative to the recipe")
        if recipe.tree is None or not recipe.tree.enabled:
            problems.append("  - balance.dataset: rebalancing classifies rows onto a tree; add a `tree:` section")
    if recipe.tree is not None and recipe.tree.file is not None:
        path = recipe.resolve_input(recipe.tree.file)
        if not path.is_file():
            problems.append(f"  - tree.file: no file at {path}: write the path of a tree YAML from `synth tree export`")
    from synth.prompting.render import PromptError, check_template, prompts_dir

    for name, path in recipe.templates.items():
        if not (prompts_dir() / name).is_file():
            problems.append(f"  - templates.{name}: no built-in prompt of that name; write one of the files under "
                            f"prompts/, e.g. generate/new_question.jinja2")
            continue
        full = recipe.resolve_input(path)
        if not full.is_file():
            problems.append(f"  - templates.{name}: no file at {full}")
            continue
        try:
            check_template(full.read_text(encoding="utf-8"), str(full))
        except PromptError as exc:
            problems.append(f"  - templates.{name}: {exc}")
    if problems:
        raise RecipeError("\n".join([f"{source}: the recipe is not valid ({len(problems)} problem(s)):", *problems]))


def absolute_inputs(data: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """A recipe mapping with every input path (seeds, tree file, templates, the dataset to
    rebalance) made absolute against `base_dir`, so the recipe can be written anywhere."""
    def absolute(value: Any) -> Any:
        return str((base_dir / value).resolve()) if isinstance(value, str) and not Path(value).is_absolute() else value

    data = dict(data)
    for section, key in (("seeds", "path"), ("tree", "file")):
        part = data.get(section)
        if isinstance(part, dict) and part.get(key):
            data[section] = {**part, key: absolute(part[key])}
    balance = data.get("balance")
    if isinstance(balance, dict) and isinstance(balance.get("dataset"), dict) and balance["dataset"].get("path"):
        data["balance"] = {**balance, "dataset": {**balance["dataset"], "path": absolute(balance["dataset"]["path"])}}
    quality = data.get("quality")
    if isinstance(quality, dict) and isinstance(quality.get("decontaminate"), list):
        data["quality"] = {**quality, "decontaminate": [
            {**entry, "path": absolute(entry.get("path"))} if isinstance(entry, dict) else absolute(entry)
            for entry in quality["decontaminate"]]}
    if isinstance(data.get("templates"), dict):
        data["templates"] = {name: absolute(path) for name, path in data["templates"].items()}
    return data


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no recipe file here; write the path of a recipe YAML (see recipes/)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError(f"{path}: not readable YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a UTF-8 text file; save the recipe as UTF-8 YAML") from None
    return parse_recipe(data, str(path), base_dir=path.resolve().parent)
