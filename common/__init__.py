"""Helpers every package may import: command-line plumbing (`cli`), ranking metrics (`ranking`),
plots (`plots`) and run directories, local or `gs://` (`paths`).

Nothing here imports another package of the project, JAX or TensorFlow.
"""
