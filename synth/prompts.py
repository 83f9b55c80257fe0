"""Render the prompt templates in `prompts/` (and user templates) safely.

Every template renders in jinja2's sandbox with `StrictUndefined`, so a typo in a
variable name is an error rather than an empty string, and a template cannot reach
Python internals. Generated text only ever enters as a variable's *value*: it is
data and is never itself rendered as a template.
"""

from __future__ import annotations

import hashlib
import threading
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateNotFound
from jinja2.loaders import BaseLoader, FileSystemLoader
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

RENDER_TIMEOUT_S = 5.0  # the sandbox bounds what a template reaches, not how long it runs


class PromptError(ValueError):
    """A template that cannot be loaded or rendered; the message says which and why."""


def prompts_dir() -> Path:
    return Path(str(resources.files("prompts")))


def _environment(loader: BaseLoader) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        loader=loader,
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@lru_cache(maxsize=8)
def _env_for(folder: str) -> ImmutableSandboxedEnvironment:
    return _environment(FileSystemLoader(folder))


def template_source(name: str, folder: Path | None = None) -> str:
    path = (folder or prompts_dir()) / name
    if not path.is_file():
        raise PromptError(f"no prompt template {name!r} under {folder or prompts_dir()}")
    return path.read_text(encoding="utf-8")


@lru_cache(maxsize=256)
def template_hash(name: str, folder: Path | None = None) -> str:
    return hashlib.sha256(template_source(name, folder).encode()).hexdigest()[:12]


def render(name: str, variables: dict[str, Any], folder: Path | None = None) -> str:
    """Render `prompts/<name>` (or `<folder>/<name>`) with `variables` as data."""
    env = _env_for(str(folder or prompts_dir()))
    try:
        template = env.get_template(name)
    except TemplateNotFound:
        raise PromptError(f"no prompt template {name!r} under {folder or prompts_dir()}") from None
    except TemplateError as exc:
        raise PromptError(f"template {name}: {exc}") from None
    return _bounded(lambda: template.render(**variables), name).strip()


def render_string(source: str, variables: dict[str, Any], label: str = "<template>") -> str:
    """Render a user-supplied template string in the sandbox."""
    env = _environment(BaseLoader())
    try:
        template = env.from_string(source)
    except TemplateError as exc:
        raise PromptError(f"{label}: template syntax error: {exc}") from None
    return _bounded(lambda: template.render(**variables), label).strip()


def check_template(source: str, label: str = "<template>") -> None:
    """Parse a user template without rendering it: syntax errors surface at recipe time."""
    try:
        _environment(BaseLoader()).parse(source)
    except TemplateError as exc:
        raise PromptError(f"{label}: template syntax error: {exc}") from None


def _bounded(fn, label: str) -> str:
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
