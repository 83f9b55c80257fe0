"""Trees as YAML: written for a person to read and edit, read back with every edit checked.

`tree_to_yaml` writes the format; `tree_from_yaml` reads it, possibly edited by hand, and
raises `TreeError` naming the node for anything it cannot take. An imported tree's id
is a hash of its content (task and structure), so importing the same file twice gives
the same tree; node ids are hashes of paths, so an edited tree keeps the ids of the
paths it kept.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import yaml

from synth.ids import data_hash
from synth.tree.model import ANY, Tree, TreeError, TreeNode, assemble, node_id_for, node_text

YAML_HEADER = """\
# A TreeSynth partitioning tree. Edit it, then `synth tree import FILE` (or name it in a
# recipe's tree.file). Each node splits on one dimension (`split`); each child fixes one
# value of it. To prune, delete a child, or delete a node's `split` and `children`; to
# rename, change a `value`; to add, add `- value: NEW` under `children`. A child with
# `any_of: [...]` instead of `value` is infinite: one value is drawn per sample.
"""
_TOP_KEYS = {"tree_id", "source", "task", "model", "settings", "root"}
_NODE_KEYS = {"value", "any_of", "split", "children", "reason"}


class _Dumper(yaml.SafeDumper):
    """Lists of values on one line (`any_of: [a, b, c]`), everything else in blocks."""


_Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=all(isinstance(x, str) for x in data)))


def tree_to_yaml(tree: Tree) -> str:
    """The tree for a person to read and edit; `reason: max_depth`, the usual, is left out."""
    kids: dict[str | None, list[TreeNode]] = {}
    for node in tree.nodes:
        kids.setdefault(node.parent_id, []).append(node)

    def out(node: TreeNode) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if node.parent_id is not None:
            if node.infinite:
                data["any_of"] = list(node.value_list or [])
            else:
                data["value"] = node.value
        children = kids.get(node.node_id, [])
        if children:
            data["split"] = children[0].dimension
            data["children"] = [out(c) for c in children]
        if node.reason and node.reason != "max_depth":
            data["reason"] = node.reason
        return data

    doc = {"tree_id": tree.tree_id, "source": tree.source, "task": tree.task_name, "model": tree.model,
           "settings": tree.settings, "root": out(tree.root)}
    return YAML_HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def _yaml_label(value: Any, where: str, what: str) -> str:
    if isinstance(value, bool) or value is None:
        raise TreeError(f"{where}: {what} is {value!r}; YAML reads yes/no/true/false/null as such: "
                        "quote it, e.g. \"yes\"")
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or value.strip() == ANY:
        raise TreeError(f"{where}: {what} must be a non-empty text other than {ANY!r}, got {value!r}")
    return " ".join(value.split())


def tree_from_yaml(text: str) -> Tree:
    """Read a tree from `tree_to_yaml`'s format, possibly edited by a person.

    The result has source 'imported' and an id hashed from its content (task and
    structure), so importing the same file twice gives the same tree.
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TreeError(f"not readable YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(doc, dict) or "root" not in doc:
        raise TreeError("a tree file is a mapping with a `root:` node (see `synth tree export`)")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise TreeError(f"unknown top-level key(s) {', '.join(sorted(map(str, unknown)))}: "
                        f"use only {', '.join(sorted(_TOP_KEYS))}")
    settings = doc.get("settings") or {}
    if not isinstance(settings, dict):
        raise TreeError("settings: must be a mapping (or left out)")
    task_name = str(doc.get("task") or "")
    nodes: list[TreeNode] = []

    def walk(data: Any, parent: TreeNode | None, dimension: str | None, where: str) -> None:
        if not isinstance(data, dict):
            raise TreeError(f"{where}: a node is a mapping (value/any_of, split, children, reason)")
        unknown = set(data) - _NODE_KEYS
        if unknown:
            raise TreeError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                            f"a node has only {', '.join(sorted(_NODE_KEYS))}")
        if parent is None:
            if "value" in data or "any_of" in data:
                raise TreeError(f"{where}: the root fixes no value: remove `value`/`any_of` from it")
            path: list[tuple[str, str]] = []
            node = TreeNode(node_id_for(path), None, 0, None, None, None, path, is_leaf=True)
        elif ("value" in data) == ("any_of" in data):
            raise TreeError(f"{where}: give a child exactly one of `value: TEXT` or `any_of: [TEXT, ...]`")
        elif "any_of" in data:
            raw = data["any_of"]
            if not isinstance(raw, list):
                raise TreeError(f"{where}: any_of must be a list of values")
            values = [_yaml_label(v, where, "an any_of value") for v in raw]
            if len({v.casefold() for v in values}) != len(values) or len(values) < 2:
                raise TreeError(f"{where}: any_of needs at least 2 distinct values")
            path = [*parent.path, (dimension, ANY)]
            node = TreeNode(node_id_for(path), parent.node_id, parent.depth + 1, dimension, None, values, path,
                            is_leaf=True, infinite=True)
        else:
            value = _yaml_label(data["value"], where, "value")
            path = [*parent.path, (dimension, value)]
            node = TreeNode(node_id_for(path), parent.node_id, parent.depth + 1, dimension, value, None, path,
                            is_leaf=True)
        here = "root" if parent is None else f"{where.rsplit(' > ', 1)[0]} > {node_text(node)}"
        reason = data.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise TreeError(f"{here}: reason must be a text")
        split, children = data.get("split"), data.get("children")
        if (split is None) != (children is None):
            raise TreeError(f"{here}: a split node needs both `split: DIMENSION` and `children:`; "
                            "to make it a leaf remove both")
        if children is not None:
            new_dim = _yaml_label(split, here, "split")
            if new_dim.casefold() in {d.casefold() for d, _ in node.path}:
                raise TreeError(f"{here}: dimension {new_dim!r} is already on the path; split on another one")
            if not isinstance(children, list) or not children:
                raise TreeError(f"{here}: children must be a non-empty list; to make it a leaf remove "
                                "`split` and `children`")
            parent_node = replace(node, is_leaf=False, status="split", reason=reason)
            nodes.append(parent_node)
            seen: set[str] = set()
            for i, child in enumerate(children):
                at = len(nodes)
                walk(child, parent_node, new_dim, f"{here} > children[{i + 1}]")
                made = nodes[at]
                key = (made.value or ANY).casefold()
                if key in seen:
                    raise TreeError(f"{here} > children[{i + 1}]: value {made.value or ANY!r} is given twice")
                seen.add(key)
                if made.infinite and len(children) > 1:
                    raise TreeError(f"{here} > children[{i + 1}]: an `any_of` child must be the only child "
                                    "(it stands for every value of the dimension)")
        else:
            nodes.append(replace(node, reason=reason))

    walk(doc["root"], None, None, "root")
    structure = [[list(map(list, n.path)), n.value_list, n.is_leaf] for n in nodes]
    tree_id = "t" + data_hash({"task": task_name, "nodes": sorted(structure, key=json.dumps)})
    settings = {**settings}
    if doc.get("tree_id"):
        settings["imported_from"] = str(doc["tree_id"])
    return assemble(tree_id, nodes, settings=settings, model=str(doc.get("model") or "imported"),
                    source="imported", task_name=task_name)

