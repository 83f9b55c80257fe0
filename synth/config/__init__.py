"""The recipe's sections that name files and places: the seed rows read from their files
(seeds.py), the test sets to decontaminate against (decontam_sets.py), where a run
generates, here or on a Ray cluster (cluster.py), and the recipe's schema that holds them all
(recipe.py: `backend`, `verify` and `quality.filters` are unions of their members' settings). Imports the parts whose settings a recipe holds
(synth.task, synth.backends, synth.strategies, synth.verify), synth.prompting (the
templates a recipe names), synth.curation and synth.similarity (the test sets' index)."""
