"""The paper-size configs (the two MuLan towers, the five Noise2Music stages): parameter counts
from eval_shape, the padding of the 30 s lengths, and the full sharded train step lowered and
compiled ahead of time on the 8-device FSDP x tensor mesh (`trainer.train.train_program`).
Nothing is run.  Of the Noise2Music stages, the two without text (low-fi audio, a spectrogram at
the bottom) are compiled; the three text stages (with the frozen T5-XL) are lowered, which traces
the whole sharded step, and not compiled: XLA:CPU takes minutes over each (the tiny text stages'
steps are compiled and run in test_n2m_train.py, and `trainer.compile` compiles them for TPU)."""
import pytest
from jax.sharding import PartitionSpec

# N2M config -> (stage, U-Net params in millions (ours, the paper's Table 2), x length, padded length)
COMPILED = ("super_resolution", "spectrogram_vocoder")
N2M = {
    "waveform_generator": ("generator", (660.9, 724), 96000, 98304),
    "waveform_cascader": ("cascader", (493.4, 487), 51200, 51200),
    "super_resolution": ("super_resolution", (84.1, 81), 76800, 76800),
    "spectrogram_generator": ("spectrogram_generator", (781.9, 745), 3000, 3072),
    "spectrogram_vocoder": ("vocoder", (32.9, 25.7), 51200, 51200),
}
# No reading of the vocoder's table row keeps it and the super-resolution model both within 10% of
# the paper's counts (docs/PAPERS.md §2.1): its gap is the documented +28%.
PAPER_GAP = {"spectrogram_vocoder": 0.29}
MULAN = {"mulan/resnet50.gin": (130, 140), "mulan/ast.gin": (190, 200)}


def _compile(config: str, ema_decay=None, compile: bool = True):
    """The config's model and its abstract state on a (1, 4, 2) mesh; its train step lowered, and
    compiled unless `compile` is False."""
    from trainer import flags
    from trainer.optimizers import adam
    from trainer.partitioning import Partitioner
    from trainer.train import train_program
    from trainer.train_state import abstract_state

    flags.parse_and_apply([f"--gin_file={config}", "--gin_file=mesh/fsdp_tensor.gin",
                           "--gin.Partitioner.mesh_shape=(1, 4, 2)", "--model_dir=/tmp/unused"], "")
    model, partitioner, opt, batch = flags.bound("train.model"), Partitioner(), adam(1e-4), 8
    state = abstract_state(model, partitioner, batch_size=batch, optimizer=opt, ema=ema_decay is not None,
                           frozen=flags.bound("train.frozen", ()))
    program = train_program(model, opt, state, partitioner, batch, ema_decay=ema_decay)
    if compile:
        compiled, _ = program.compile()
        assert compiled.cost_analysis() is not None
    else:
        assert "stablehlo" in program.lower().as_text()[:100000]
    return model, state


@pytest.mark.timeout(900)
@pytest.mark.parametrize("config", list(MULAN))
def test_mulan_paper_size_by_shape_and_aot_compile(config):
    from trainer.train_state import param_count

    _, state = _compile(config)
    n = param_count(state.abstract.params) / 1e6
    assert MULAN[config][0] < n < MULAN[config][1], n
    # The text tower is BERT-base (~110M incl. embeddings) in both.
    assert 108 < param_count(state.abstract.params["text_tower"]) / 1e6 < 111
    # FSDP really shards the BERT embedding table over the 4-way fsdp axis.
    assert state.shardings.params["text_tower"]["encoder"]["word_embeddings"].spec == PartitionSpec("tensor", "fsdp")
    # The transformer layers are scanned (SCAN_LAYERS): one stacked tree, its 'layers' axis unsharded.
    assert state.shardings.params["text_tower"]["encoder"]["layers"]["mlp_in"]["kernel"].spec == PartitionSpec(
        None, "fsdp", "tensor")
    assert state.abstract.params["text_tower"]["encoder"]["layers"]["mlp_in"]["kernel"].shape == (12, 768, 3072)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("config", list(N2M))
def test_noise2music_paper_size_by_shape_and_aot_compile(config):
    from trainer import flags
    from trainer.train_state import param_count

    stage, (ours, paper), length, padded = N2M[config]
    model, state = _compile(f"noise2music/{config}.gin", ema_decay=0.9999, compile=config in COMPILED)
    assert (model.stage, model.length, model.padded) == (stage, length, padded)
    unet = param_count(state.abstract.params["unet"]) / 1e6
    assert abs(unet - ours) < 0.05, unet
    assert abs(unet / paper - 1) < PAPER_GAP.get(config, 0.10), (unet, paper)
    if model.has_text:   # the frozen T5 v1.1 XL encoder: no Adam moments, no EMA copy
        assert 1220 < param_count(state.abstract.params["text_encoder"]) / 1e6 < 1230
        assert "text_encoder" not in state.abstract.ema_params
    assert param_count(state.abstract.opt_state) < 2 * unet * 1e6 + 1000
    # FSDP x tensor really shards the widest convolutions: [kernel, C_in (fsdp), C_out (tensor)].
    last = len(flags.bound("UNet1D.strides")) - 1
    depth = state.shardings.params["unet"][f"down{last}"]
    conv = depth["layers" if "layers" in depth else "layer_0"]["res"]["conv1"]["kernel"]
    assert conv.spec == PartitionSpec(None, "fsdp", "tensor")
