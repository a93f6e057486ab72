"""Helpers every package may import: command-line plumbing (`cli`) and ranking metrics (`ranking`).

Nothing here imports another package of the project, JAX or TensorFlow.
"""
