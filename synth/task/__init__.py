"""What a sample is: the task and its output fields (task.py) and the formats those fields
keep, with the JSON schema and grammar that carry them to a model (formats.py). Imports
only synth's root modules (errors, ids, reject, slot)."""
