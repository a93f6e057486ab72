"""Audio embedders for evaluation (`base`: the interface and the registry; one file per embedder)."""
