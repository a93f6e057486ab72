"""The sharded training runtime shared by MuLan and Noise2Music (the role t5x plays).

`base_model.py` (what a model family supplies), `partitioning.py` (mesh, logical rules, host data
layout), `train_state.py` (`abstract_state`: the state's shapes and shardings, born sharded),
`train.py` (the gin-configurable `train()` and `train_program`), `hooks.py` (media every few
steps), `checkpoints.py` (Orbax, per-host input positions), `restore.py` (a run loaded for
inference), `batching.py` (inference batches on the mesh), `input_pipeline.py`, `metrics.py`,
`multihost.py`, `optimizers.py`, `flags.py`, `launch.py` (training from the command line),
`topology.py` (TPU topologies), `aot.py` + `flops.py` (compiled
programs' memory, FLOPs and MFU), `toy.py` (the trainer's test model).  Binaries: `main`, `summary`,
`compile`.  Imports no model family.
"""
