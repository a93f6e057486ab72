"""The five paper-size Noise2Music configs: parameter counts from eval_shape, the padding of the
30 s lengths, and the full sharded train step (EMA on) compiled ahead of time on the 8-device
FSDP x tensor mesh.  Nothing is run."""
import gin
import pytest
from jax.sharding import PartitionSpec

# config -> (stage, U-Net params in millions (low, high), x length, padded length)
PAPER = {
    "waveform_generator": ("generator", (460, 475), 96000, 98304),
    "waveform_cascader": ("cascader", (370, 385), 51200, 51200),
    "super_resolution": ("super_resolution", (80, 88), 76800, 76800),
    "spectrogram_generator": ("spectrogram_generator", (560, 575), 3000, 3072),
    "spectrogram_vocoder": ("vocoder", (30, 36), 51200, 51200),
}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("config", list(PAPER))
def test_paper_size_config_by_shape_and_aot_compile(config):
    from trainer import flags
    from trainer.optimizers import adam
    from trainer.partitioning import Partitioner
    from trainer.train import compile_train_step
    from trainer.train_state import abstract_state, param_count

    stage, millions, length, padded = PAPER[config]
    flags.parse_and_apply([f"--gin_file=noise2music/{config}.gin", "--gin_file=mesh/fsdp_tensor.gin",
                           "--gin.Partitioner.mesh_shape=(1, 4, 2)", "--model_dir=/tmp/unused"], "")
    model = flags.bound("train.model")
    assert (model.stage, model.length, model.padded) == (stage, length, padded)
    partitioner = Partitioner()
    batch, opt = 8, adam(1e-4)
    factory = abstract_state(model, partitioner, optimizer=opt, batch_size=batch, ema=True)
    unet = param_count(factory.abstract.params["unet"]) / 1e6
    assert millions[0] < unet < millions[1], unet
    if model.has_text:   # the frozen T5 v1.1 XL encoder
        assert 1220 < param_count(factory.abstract.params["text_encoder"]) / 1e6 < 1230
    compiled, _, _ = compile_train_step(model, opt, factory, partitioner, batch, ema_decay=0.9999)
    assert compiled.cost_analysis() is not None
    # FSDP x tensor really shards the widest convolutions: [kernel, C_in (fsdp), C_out (tensor)].
    last = len(gin.query_parameter("UNet1D.strides")) - 1
    conv = factory.shardings.params["unet"][f"down{last}_block0"]["conv1"]["kernel"]
    assert conv.spec == PartitionSpec(None, "fsdp", "tensor")
