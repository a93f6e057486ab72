"""data: filled in by its own issue."""
