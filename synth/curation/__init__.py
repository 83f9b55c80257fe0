"""What a run keeps: the LLM judge (judge.py), exact and near-duplicate detection
(dedup.py) and the test-set index that decontamination matches against (decontam.py).
Imports synth.task, synth.prompting and synth.similarity."""
