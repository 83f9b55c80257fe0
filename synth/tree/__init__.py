"""TreeSynth partitioning trees: the data (model.py), building one with an LLM (build.py,
answers.py) and YAML for people (io.py)."""

from synth.tree.build import ALGORITHM_VERSION, STAGES, TEMPLATES, build_tree, tree_id_for
from synth.tree.io import tree_from_yaml, tree_to_yaml
from synth.tree.model import (ANY, Tree, TreeError, TreeNode, assemble, leaf_constraints, leaf_label, node_id_for,
                              render_tree)

__all__ = ["ALGORITHM_VERSION", "ANY", "STAGES", "TEMPLATES", "Tree", "TreeError", "TreeNode", "assemble",
           "build_tree", "leaf_constraints", "leaf_label", "node_id_for", "render_tree", "tree_from_yaml",
           "tree_id_for", "tree_to_yaml"]
