"""A run: the ledger (runs.py), its steps in order (lifecycle.py), the growth target
(growth.py), which tree it uses (recipe_tree.py), earlier samples placed on that tree
(placement.py), an existing dataset imported (existing.py) and what a recipe will cost
(projection.py). May import every other part of storage; no other part imports it."""
