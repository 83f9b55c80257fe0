"""The one entry for rendering prompts: `Renderer(overrides)`.

Every prompt the factory sends or writes (generation, tree building, classification,
the judge, the dataset card) is a jinja2 file under `prompts/`, rendered here in the
sandbox with `StrictUndefined`: a typo in a variable name is an error rather than an
empty string, and a template cannot reach Python internals. A recipe's `templates:`
replace built-in files by name; the renderer is passed to every step, so any built-in
can be overridden, and `template_hash(name)` says which one was used (the file's hash,
or `user-<hash>` for an override), for the requests table.

Generated text only ever enters as a variable's *value*: it is data and is never
itself rendered as a template.

Owners of a template register example variables with `@prompt_example(name)`; the
pre-flight trial-renders every override with them before the catalog is touched, and
the golden tests render every built-in with them.

    renderer = Renderer({"tree/pivots.jinja2": my_source})
    text = renderer.render("tree/pivots.jinja2", variables)
"""

from __future__ import annotations

import hashlib
import threading
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

from jinja2 import StrictUndefined, TemplateError, TemplateNotFound
from jinja2.loaders import BaseLoader, FileSystemLoader
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from synth.errors import BadInput

RENDER_TIMEOUT_S = 5.0  # the sandbox bounds what a template reaches, not how long it runs


class PromptError(BadInput, ValueError):
    """A template that cannot be loaded or rendered; the message says which and why."""


def prompts_dir() -> Path:
    return Path(str(resources.files("prompts")))


def builtin_names() -> list[str]:
    root = prompts_dir()
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jinja2"))


def _environment(loader: BaseLoader) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(loader=loader, undefined=StrictUndefined, autoescape=False,
                                         keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True)


@lru_cache(maxsize=4)
def _builtin_env(folder: str) -> ImmutableSandboxedEnvironment:
    return _environment(FileSystemLoader(folder))


@lru_cache(maxsize=256)
def _file_hash(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def user_template_hash(source: str) -> str:
    return "user-" + hashlib.sha256(source.encode("utf-8", "backslashreplace")).hexdigest()[:12]


def check_template(source: str, label: str = "<template>") -> None:
    """Parse a template without rendering it: syntax errors surface at recipe time."""
    try:
        _environment(BaseLoader()).parse(source)
    except TemplateError as exc:
        raise PromptError(f"{label}: template syntax error: {exc}") from None


class Renderer:
    """Renders built-in prompts, or the recipe's replacement for them, in the sandbox.

    Cheap to build and to pickle (a Ray replica gets a copy): it holds the override
    sources only; compiled templates are cached per instance.
    """

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        self.overrides = dict(overrides or {})
        self._compiled: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"overrides": self.overrides}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.overrides, self._compiled = state["overrides"], {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Renderer) and other.overrides == self.overrides

    def source(self, name: str) -> str:
        if name in self.overrides:
            return self.overrides[name]
        path = prompts_dir() / name
        if not path.is_file():
            raise PromptError(f"no prompt template {name!r} under {prompts_dir()}")
        return path.read_text(encoding="utf-8")

    def template_hash(self, name: str) -> str:
        """The hash of the template `render(name)` uses: the user's override, if any."""
        if name in self.overrides:
            return user_template_hash(self.overrides[name])
        path = prompts_dir() / name
        if not path.is_file():
            raise PromptError(f"no prompt template {name!r} under {prompts_dir()}")
        return _file_hash(str(path))

    def literal_text(self, name: str) -> list[str]:
        """The template's own text: what it says outside tags and comments, chunk by chunk
        (what a model that echoes its instructions would copy)."""
        from jinja2 import nodes

        try:
            tree = _environment(BaseLoader()).parse(self.source(name))
        except TemplateError as exc:
            raise PromptError(f"{self.label(name)}: template syntax error: {exc}") from None
        return [node.data for output in tree.find_all(nodes.Output) for node in output.nodes
                if isinstance(node, nodes.TemplateData)]

    def label(self, name: str) -> str:
        return f"user template for {name}" if name in self.overrides else name

    def _template(self, name: str) -> Any:
        if name not in self._compiled:
            try:
                if name in self.overrides:
                    self._compiled[name] = _environment(BaseLoader()).from_string(self.overrides[name])
                else:
                    self._compiled[name] = _builtin_env(str(prompts_dir())).get_template(name)
            except TemplateNotFound:
                raise PromptError(f"no prompt template {name!r} under {prompts_dir()}") from None
            except TemplateError as exc:
                raise PromptError(f"{self.label(name)}: template syntax error: {exc}") from None
        return self._compiled[name]

    def render(self, name: str, variables: Mapping[str, Any]) -> str:
        """Render `name` with `variables` as data; whitespace at both ends is stripped."""
        template = self._template(name)
        return _bounded(lambda: template.render(**variables), self.label(name)).strip()


def render_string(source: str, variables: Mapping[str, Any], label: str = "<template>") -> str:
    """Render one template string in the sandbox (tests, one-off user text)."""
    return Renderer({label: source}).render(label, variables)


# -- example variables, for trial renders and golden tests -------------------------------

_EXAMPLES: dict[str, Callable[[], dict[str, Any]]] = {}


def prompt_example(name: str) -> Callable[[Callable[[], dict[str, Any]]], Callable[[], dict[str, Any]]]:
    """Register the function that gives example variables for the built-in template `name`."""
    def register(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        _EXAMPLES[name] = fn
        return fn
    return register


def example_variables(name: str) -> dict[str, Any]:
    if name not in _EXAMPLES:
        raise PromptError(f"no example variables registered for {name!r} (register them with @prompt_example)")
    return _EXAMPLES[name]()


def registered_examples() -> list[str]:
    return sorted(_EXAMPLES)


def check_overrides(renderer: Renderer) -> None:
    """Trial-render every override with its built-in's example variables, so a template the
    sandbox refuses, or one that names a variable the step does not give, fails before
    any request is made. The owners' modules must be imported (flows/preflight.py does that)."""
    for name in sorted(renderer.overrides):
        renderer.render(name, example_variables(name))


def _bounded(fn: Callable[[], str], label: str) -> str:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["out"] = fn()
        except BaseException as exc:  # surfaced below, in the caller's thread
            box["err"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(RENDER_TIMEOUT_S)
    if worker.is_alive():
        raise PromptError(f"{label}: rendering took over {RENDER_TIMEOUT_S:.0f} s; simplify the template's loops")
    if "err" in box:
        exc = box["err"]
        if isinstance(exc, SecurityError):
            raise PromptError(f"{label}: refused by the template sandbox: {exc}") from None
        if isinstance(exc, TemplateError):
            raise PromptError(f"{label}: {type(exc).__name__}: {exc}") from None
        raise exc
    return box["out"]
