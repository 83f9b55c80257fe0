"""The domain of the synthetic data factory: recipes, prompts, backends, trees,
strategies, parsing and verification. Imports nothing of ours and never prefect."""
