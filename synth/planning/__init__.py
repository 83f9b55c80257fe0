"""Planning a run before any request: the exact allocator (allocate.py), each leaf's target
(balance.py), the strategy a budget buys (budget.py) and the plan of slots (plan.py).
Imports synth.strategies, synth.tree and synth.config."""
