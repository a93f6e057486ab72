"""noise2music: filled in by its own issue."""
