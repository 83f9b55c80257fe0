"""How alike texts are: MinHash LSH over word shingles (minhash.py), the offline e5
sentence embedder (embedder.py) and the cosine index over its vectors (semantic.py).
Imports synth.backends only (the embedder's free cores)."""
