"""Asking a model: the prompt rendered from its template (render.py), the batched call
and the request rows it leaves (calls.py), and the reply read back into fields or a
reject (parsing.py). Imports synth.task and synth.backends."""
