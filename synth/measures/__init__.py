"""What a dataset is worth, measured after it is made: figures over its texts (figures.py:
diversity, duplicates, formats), the small student model (student.py), the probe that
fine-tunes it on the data (probe.py) and gradient diversity (gvendi.py). Imports
synth.task, synth.verify, synth.similarity and synth.backends; nothing imports it but
storage and flows."""
