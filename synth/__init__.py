"""The domain of the synthetic data factory, pure: no database, no Prefect. Imports nothing
of storage or flows.

At the root, what every group shares: errors.py (the one error base), ids.py (every hash
and seed), reject.py (the one shape of a refused output), slot.py (one planned sample).
One sub-package per group (tests/test_architecture.py holds which may import which):

    task/        the task, its output fields and their formats
    backends/    the engines, one module per backend (BACKENDS)
    prompting/   asking a model: render a prompt, make the batched call, parse the reply
    verify/      the answer verifiers (VERIFIERS)
    strategies/  the generation strategies (STRATEGIES)
    similarity/  how alike texts are: MinHash LSH, the e5 embedder, the cosine index
    tree/        TreeSynth trees, and rows routed to their leaves (classify, embed_assign)
    curation/    what a run keeps: the judge, deduplication, the decontamination index
    config/      the recipe's seeds, test sets and cluster
    planning/    targets, budget, the allocator and the plan of slots
    measures/    what a dataset is worth: figures, the student probe, G-Vendi
    execution/   where chunks run: this process or Ray replicas

A group's __init__.py
re-exports nothing (backends, verify, strategies: registries; tree and execution: their
API): a name has one import path, its module's."""
