"""TreeSynth partitioning trees as data: nodes, leaves, ids, and how a tree is shown.

A tree splits the task's data space into leaves whose paths of `dimension=value`
constraints are mutually exclusive (TreeSynth, Wang et al. 2025, arXiv 2503.17195).
A node with more values than `infinite_threshold` is "infinite": ONE child holds the
whole list (`value_list`, path value `*`) and a value is drawn per sample
(`leaf_constraints`).

Children are listed in a canonical order (by value), and node ids are a hash of the
path, so a tree loaded from the catalog or from YAML has the same ids and order, and
the same path in two trees is the same leaf id.

Leaves out: building (synth/tree/build.py), YAML (synth/tree/io.py), storage
(storage/tables/trees.py).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from synth.errors import BadInput

ANY = "*"  # the path value of an infinite node: one of its value_list is drawn per sample


class TreeError(BadInput, ValueError):
    """A tree (usually an edited YAML file) that is not valid; the message names the node."""


@dataclass(frozen=True)
class TreeNode:
    node_id: str
    parent_id: str | None
    depth: int
    dimension: str | None  # the dimension whose value this node fixes (None at the root)
    value: str | None  # that value (None at the root and on infinite nodes)
    value_list: list[str] | None  # infinite nodes: the whole list, one drawn per sample
    path: list[tuple[str, str]]  # (dimension, value) from the root; value ANY on infinite nodes
    is_leaf: bool
    infinite: bool = False
    status: str = "leaf"  # split / leaf
    reason: str | None = None  # leaves: why not split further; split nodes: a note, if any
    # every infinite node on the path (this one included): dimension -> its value list
    any_of: dict[str, list[str]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return leaf_label(self)


@dataclass(frozen=True)
class Tree:
    tree_id: str
    nodes: list[TreeNode]  # breadth-first, children in canonical order
    settings: dict[str, Any]
    model: str
    rounds: int = 0  # sequential backend calls it cost
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    source: str = "built"  # built / imported
    task_name: str = ""
    status: str = "complete"
    # per stage: requests, invalid answers, retries, nodes that failed for good. Build-time
    # only (not stored): the requests table holds the same facts row by row.
    stats: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def root(self) -> TreeNode:
        return self.nodes[0]

    def node(self, node_id: str) -> TreeNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"tree {self.tree_id} has no node {node_id}")

    def children(self, node_id: str) -> list[TreeNode]:
        return [n for n in self.nodes if n.parent_id == node_id]

    def leaves(self) -> list[TreeNode]:
        return [n for n in self.nodes if n.is_leaf]

    @property
    def depth(self) -> int:
        return max(n.depth for n in self.nodes)



def node_id_for(path: Sequence[Sequence[str]]) -> str:
    """Same path, same id: in a built tree, in the catalog and after a YAML round trip."""
    blob = json.dumps([list(p) for p in path], ensure_ascii=False)  # the id formula: keep it as it is
    return "n" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def leaf_label(leaf: TreeNode) -> str:
    """`setting=farm / operation=ratios`; `root` for a tree that never split."""
    return " / ".join(f"{d}={v}" for d, v in leaf.path) or "root"


def leaf_constraints(leaf: TreeNode, rng_or_seed: random.Random | int | str) -> list[tuple[str, str]]:
    """The leaf's path with a value drawn for every infinite node on it.

    The same seed gives the same draw: `leaf_constraints(leaf, 7)` is stable across runs.
    """
    rng = rng_or_seed if isinstance(rng_or_seed, random.Random) else random.Random(f"{rng_or_seed}:{leaf.node_id}")
    out = []
    for dimension, value in leaf.path:
        if value == ANY:
            choices = leaf.any_of.get(dimension)
            if not choices:
                raise TreeError(f"node {leaf_label(leaf)}: infinite dimension {dimension!r} has no value list")
            value = rng.choice(choices)
        out.append((dimension, value))
    return out



def _sibling_key(node: TreeNode) -> tuple[str, str]:
    value = node.value if node.value is not None else ANY
    return (value.casefold(), value)


def ordered(nodes: list[TreeNode]) -> list[TreeNode]:
    """Breadth-first, children by value: the one order every source of a tree agrees on."""
    kids: dict[str | None, list[TreeNode]] = {}
    for node in nodes:
        kids.setdefault(node.parent_id, []).append(node)
    out, queue = [], sorted(kids.get(None, []), key=_sibling_key)
    while queue:
        out += queue
        queue = [c for n in queue for c in sorted(kids.get(n.node_id, []), key=_sibling_key)]
    if len(out) != len(nodes):
        raise TreeError(f"{len(nodes) - len(out)} node(s) are not reachable from the root")
    return out


def assemble(tree_id: str, nodes: list[TreeNode], **fields: Any) -> Tree:
    """A Tree from nodes in any order (the catalog's rows): canonical order, any_of rebuilt."""
    nodes_in_order = ordered(nodes)
    fixed: dict[str, TreeNode] = {}
    for node in nodes_in_order:
        inherited = dict(fixed[node.parent_id].any_of) if node.parent_id else {}
        if node.infinite and node.dimension and node.value_list:
            inherited[node.dimension] = list(node.value_list)
        fixed[node.node_id] = replace(node, any_of=inherited)
    return Tree(tree_id=tree_id, nodes=[fixed[n.node_id] for n in nodes_in_order], **fields)


# -- showing ------------------------------------------------------------------------------


def node_text(node: TreeNode) -> str:
    if node.parent_id is None:
        return "root"
    if node.infinite:
        shown = ", ".join((node.value_list or [])[:4])
        more = ", ..." if len(node.value_list or []) > 4 else ""
        return f"{node.dimension}=* (any of {len(node.value_list or [])}: {shown}{more})"
    return f"{node.dimension}={node.value}"


def render_tree(tree: Tree, counts: dict[str, int] | None = None) -> str:
    """The tree as indented lines; leaf sample counts in [brackets] when `counts` is given."""
    leaves = tree.leaves()
    head = (f"tree {tree.tree_id} ({tree.source}, model {tree.model}): {len(leaves)} leaves, depth {tree.depth}, "
            f"{tree.rounds} rounds, {tree.requests} requests, {tree.prompt_tokens + tree.completion_tokens} tokens")
    lines = [head]
    kids: dict[str | None, list[TreeNode]] = {}
    for node in tree.nodes:
        kids.setdefault(node.parent_id, []).append(node)

    def walk(node: TreeNode, prefix: str, tail: str) -> None:
        text = tail + node_text(node)
        if node.is_leaf:
            if counts is not None:
                text += f"  [{counts.get(node.node_id, 0)}]"
            if node.reason and node.reason != "max_depth":
                text += f"  ({node.reason})"
        elif node.reason:
            text += f"  (note: {node.reason})"
        lines.append(text)
        children = kids.get(node.node_id, [])
        for i, child in enumerate(children):
            last = i == len(children) - 1
            walk(child, prefix + ("   " if last else "│  "), prefix + ("└─ " if last else "├─ "))

    walk(tree.root, "", "")
    if counts is not None:
        total = sum(counts.get(leaf.node_id, 0) for leaf in leaves)
        lines.append(f"{total} samples over {len(leaves)} leaves")
    return "\n".join(lines)

