"""The five paper-size Noise2Music configs: parameter counts from eval_shape, the padding of the
30 s lengths, and the full sharded train step (EMA on) compiled ahead of time on the 8-device
FSDP x tensor mesh.  Nothing is run."""
import gin
import jax
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
    from noise2music.train import CONFIGURABLES
    from trainer import flags, main as trainer_main
    from trainer.optimizers import adam
    from trainer.partitioning import Partitioner
    from trainer.train import make_train_step
    from trainer.train_state import make_state_factory, param_count

    stage, millions, length, padded = PAPER[config]
    trainer_main.import_configurables(CONFIGURABLES)
    flags.parse_and_apply([f"--gin_file=noise2music/{config}.gin", "--gin_file=mesh/fsdp_tensor.gin",
                           "--gin.Partitioner.mesh_shape=(1, 4, 2)", "--model_dir=/tmp/unused"], "")
    model = gin.query_parameter("train.model").scoped_configurable_fn()
    assert (model.stage, model.length, model.padded) == (stage, length, padded)
    partitioner = Partitioner()
    batch, opt = 8, adam(1e-4)
    factory = make_state_factory(model, opt, partitioner, batch_size=batch, ema=True)
    unet = param_count(factory.abstract.params["unet"]) / 1e6
    assert millions[0] < unet < millions[1], unet
    if model.has_text:   # the frozen T5 v1.1 XL encoder
        assert 1220 < param_count(factory.abstract.params["text_encoder"]) / 1e6 < 1230
    specs = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=partitioner.batch_sharding(len(v.shape)))
             for k, v in model.batch_spec(batch).items()}
    step = jax.jit(make_train_step(model, opt, 0.9999, None),
                   in_shardings=(factory.shardings, {k: v.sharding for k, v in specs.items()}),
                   out_shardings=(factory.shardings, partitioner.replicated), donate_argnums=(0,))
    with partitioner.activate():
        compiled = step.lower(factory.abstract, specs).compile()
    assert compiled.cost_analysis() is not None
    # FSDP x tensor really shards the widest convolutions: [kernel, C_in (fsdp), C_out (tensor)].
    last = len(gin.query_parameter("UNet1D.strides")) - 1
    conv = factory.shardings.params["unet"][f"down{last}_block0"]["conv1"]["kernel"]
    assert conv.spec == PartitionSpec(None, "fsdp", "tensor")
