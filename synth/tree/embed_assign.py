"""Rows to leaves by embedding: a cheap alternative to LLM classification (synth/tree/classify.py).

Each leaf is described by its path ("topic: money and shopping; steps: 2-3"; an infinite
dimension by its whole value list), each row by its question text; both are embedded
(synth/similarity/embedder.py) and a row goes to the leaf whose description is closest (cosine). No
request is made, so an import of 10,000 rows costs embedding time only (about 18 rows a
second on these 2 cores) against one LLM request per row and level.

Chosen with `balance.assign: embedding`. Agreement with the LLM classifier and with hand
labels on GSM8K (benchmarks/leaf_assign.py) is in BENCHMARKS.md: it is a coarse router,
good where the leaves' names say what their rows are about.

>>> leaf_description([("topic", "money"), ("steps", "*")], {"steps": ["2", "3"]})
'topic: money; steps: 2 or 3'
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from synth.tree import ANY, Tree
from synth.tree.classify import Assignment


def leaf_description(path: Sequence[tuple[str, str]], any_of: dict[str, list[str]]) -> str:
    parts = [f"{dim}: {' or '.join(any_of.get(dim, [])) if value == ANY else value}" for dim, value in path]
    return "; ".join(parts)


def assign_by_embedding(tree: Tree, rows_text: Sequence[str], embed: Callable[[Sequence[str]], np.ndarray]
                        ) -> list[Assignment]:
    """One Assignment per row, in order: the leaf whose description is closest."""
    leaves = tree.leaves()
    if len(leaves) == 1:
        only = leaves[0]
        return [Assignment(row=i, leaf_id=only.node_id, node_id=only.node_id, path=list(only.path),
                           status="assigned") for i in range(len(rows_text))]
    descriptions = embed([leaf_description(leaf.path, leaf.any_of) for leaf in leaves])
    out: list[Assignment] = []
    texts = [str(t or "") for t in rows_text]
    vectors = embed(texts) if texts else np.zeros((0, descriptions.shape[1]), dtype=np.float32)
    scores = vectors @ descriptions.T
    for i, text in enumerate(texts):
        if not text.strip():
            out.append(Assignment(row=i, leaf_id=None, node_id=tree.root.node_id, path=[], status="unassigned",
                                  reason="no text to classify"))
            continue
        leaf = leaves[int(np.argmax(scores[i]))]
        out.append(Assignment(row=i, leaf_id=leaf.node_id, node_id=leaf.node_id, path=list(leaf.path),
                              status="assigned", reason=f"embedding: cosine {float(scores[i].max()):.3f}"))
    return out

