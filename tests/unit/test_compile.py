"""Ahead-of-time compilation for TPU topologies (`trainer.compile`, `trainer.aot`,
`trainer.topology`) and the analytic FLOP count (`trainer.flops`).  The compiles need libtpu (the
`[tpu]` extra, in the test set-up): without it they are skipped, saying so."""
import importlib.util
import json

import jax
import jax.numpy as jnp
import pytest

from trainer import compile as compile_bin
from trainer import topology
from trainer.flops import matmul_flops

needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason="libtpu is not installed (pip install -e '.[tpu]')")


def _sds(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def test_flops_of_matmuls_convolutions_scans_and_gradients():
    w, x = _sds(64, 32), _sds(8, 64)
    assert matmul_flops(lambda w, x: x @ w, w, x) == 2 * 8 * 64 * 32
    loss = lambda w, x: jnp.sum(jnp.tanh(x @ w))
    # forward + the two backward matmuls (dW, dX)
    assert matmul_flops(jax.grad(loss, argnums=(0, 1)), w, x) == 3 * 2 * 8 * 64 * 32
    k, a = _sds(3, 16, 32), _sds(2, 100, 16)
    conv = lambda k, a: jax.lax.conv_general_dilated(a, k, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))
    assert matmul_flops(conv, k, a) == 2 * 2 * 100 * 32 * 16 * 3
    assert matmul_flops(jax.grad(lambda k, a: jnp.sum(conv(k, a) ** 2), argnums=(0, 1)), k, a) == 3 * 2 * 2 * 100 * 32 * 16 * 3
    sq = _sds(64, 64)
    scan = lambda w, x: jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=5)[0]
    assert matmul_flops(jax.jit(scan), sq, x) == 5 * 2 * 8 * 64 * 64
    cond = lambda w, x: jax.lax.cond(True, lambda: (x @ w) @ w.T, lambda: x)
    assert matmul_flops(cond, w, x) == 2 * (2 * 8 * 64 * 32)


def test_topology_names_and_accelerator_types():
    chip, shape = topology.parse("v5p:4x4x4")
    assert (chip.name, shape, topology.num_chips("v5p:4x4x4")) == ("v5p", (4, 4, 4), 64)
    assert topology.chip("v5e:16x16").hbm_bytes == 16 * 2 ** 30
    for bad, says in [("v9:2x2", "the chips are"), ("v5e:2x2x2", "has 2 axes"), ("v5p", "e.g. v4:2x2x1")]:
        with pytest.raises(topology.TopologyError, match=says):
            topology.parse(bad)
    assert {a: topology.from_accelerator_type(a) for a in ("v5p-128", "v5p-256", "v4-8", "v4-32", "v5litepod-16",
                                                            "v5litepod-8", "v6e-256")} == {
        "v5p-128": "v5p:4x4x4", "v5p-256": "v5p:4x4x8", "v4-8": "v4:2x2x1", "v4-32": "v4:2x2x4",
        "v5litepod-16": "v5e:4x4", "v5litepod-8": "v5e:2x4", "v6e-256": "v6e:16x16"}
    with pytest.raises(topology.TopologyError, match="v5p-N"):
        topology.from_accelerator_type("v5x-8")


@needs_libtpu
def test_a_recipe_refuses_another_slice():
    """`train.topology_name` (a recipe's): the run's devices must be that slice's chips."""
    topology.check_devices("v5e:2x2", topology.devices("v5e:2x2"), "train.topology_name")
    for name, devices, says in [("v5p:4x4x4", jax.devices(), r"64 x TPU v5, but this run has 8 x cpu"),
                                ("v5e:2x4", topology.devices("v5e:2x2"), r"8 x TPU v5 lite, but this run has 4 x TPU v5 lite")]:
        with pytest.raises(topology.TopologyError, match=rf"train.topology_name='{name}': .*{says}"):
            topology.check_devices(name, devices, "train.topology_name")


def _run(capsys, *argv):
    code = 0
    try:
        compile_bin.main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@needs_libtpu
def test_toy_train_step_compiles_for_a_real_topology_and_reports(capsys):
    code, out, err = _run(capsys, "--gin_file=toy/tiny_cpu.gin", "--topology=v5e:2x2", "--gin.BATCH_SIZE=64")
    assert code == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert (r["topology"], r["chip"], r["num_devices"], r["fits"], r["global_batch"]) == ("v5e:2x2", "v5e", 4, True, 64)
    assert r["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
    m = r["memory"]
    assert r["hbm_bytes_per_device"] == m["arguments"] + m["outputs"] - m["aliased"] + m["temporaries"] + m["generated_code"]
    assert 0 < r["hbm_bytes_per_device"] < r["hbm_capacity_bytes"] == 16 * 2 ** 30
    assert m["aliased"] > 0                                   # the state is donated
    # XLA's count adds elementwise work and the optimizer to the matmuls: same order.
    assert 0.7 < r["flops_xla_per_device"] / r["flops_analytic_per_device"] < 1.6
    assert r["estimated_step_seconds"] > 0 and r["step_time_source"] == "xla" and 0 < r["projected_mfu"] < 1
    assert "HBM per device" in out and "projected MFU" in out


@needs_libtpu
def test_compile_errors_name_the_setting(capsys):
    code, _, err = _run(capsys, "--gin_file=toy/tiny_cpu.gin", "--topology=v5e:2x2", "--headroom=0.9999999")
    assert code == 2 and "does not fit" in err and "temporaries" in err
    assert "largest per-device arguments: batch/inputs" in err
    # A batch XLA itself cannot place in HBM: its message, and the inputs (32 GiB per device) named.
    code, out, err = _run(capsys, "--gin_file=toy/tiny_cpu.gin", "--topology=v5e:2x2", "--gin.BATCH_SIZE=268435456")
    r = json.loads(out.strip().splitlines()[-1])
    assert code == 2 and not r["fits"] and r["hbm_bytes_per_device"] > 16 * 2 ** 30
    assert "XLA: RESOURCE_EXHAUSTED" in err and "batch/inputs (32.00 GiB)" in err
    code, _, err = _run(capsys, "--gin_file=toy/tiny_cpu.gin", "--topology=v5e:2x2", "--gin.Partitioner.mesh_shape=(1, 8, 1)")
    assert code == 2 and "Partitioner.mesh_shape=(1, 8, 1)" in err and "4 devices" in err
    code, _, err = _run(capsys, "--gin_file=toy/tiny_cpu.gin", "--accelerator_type=v5litepod-16", "--gin.BATCH_SIZE=8")
    assert code == 2 and "BATCH_SIZE=8 is not divisible by the 16 batch shards" in err
    code, _, err = _run(capsys, "--gin_file=mulan/tiny_cpu.gin", "--gin.train.microbatches=2")
    assert code == 2 and "train.microbatches=2: MulanModel's loss is not a mean over examples" in err


def test_compile_needs_a_known_topology(capsys):
    code, _, err = _run(capsys, "--gin_file=toy/tiny_cpu.gin", "--topology=v7x:2x2")
    assert code == 2 and "'v7x:2x2'" in err and "v5e:16x16" in err
    code, _, err = _run(capsys, "--gin_file=toy/tiny_cpu.gin", "--gin.TOPOLOGY=None")
    assert code == 2 and "--topology=NAME" in err


def test_train_logs_mfu_from_the_analytic_flops(tmp_path, caplog):
    from trainer import main as trainer_main
    from trainer.metrics import read_jsonl

    out = trainer_main.main(["--gin_file=toy/tiny_cpu.gin", "--gin.TRAIN_STEPS=4", "--gin.train.log_period=2",
                             "--gin.train.eval_period=0", "--gin.train.cpu_peak_flops=8e9", f"--model_dir={tmp_path}"])
    rows = read_jsonl(str(tmp_path / "metrics.jsonl"))
    logged = [r for r in rows if "perf/mfu" in r]
    assert [r["step"] for r in logged] == [2, 4]
    # Per device: the step's matmul FLOPs over 8 devices, the CPU peak shared by them.
    for r in logged:
        assert r["perf/mfu"] == pytest.approx(out["flops_per_step_per_device"] * r["perf/steps_per_second"] / 1e9)
    # Forward and backward: between 2x and 3x the forward's matmuls (no gradient for the inputs).
    import gin

    from trainer import flags
    from trainer.train_state import abstract_state

    model = flags.bound("train.model")
    params = abstract_state(model, None, batch_size=32).abstract.params
    forward = matmul_flops(lambda p, b: model.loss(p, b, jax.random.PRNGKey(0))[0], params, model.batch_spec(32))
    assert 2 * forward < 8 * out["flops_per_step_per_device"] < 3 * forward
    assert 0 < out["mfu"] < 1
    gin.clear_config()
    assert "| MFU " in caplog.text


def test_loop_bodies_xla_counts_once_are_scaled_to_the_analytic_count():
    """XLA's cost analysis counts a while loop's body once (a scanned stack of layers runs it
    `length` times): `aot.analyse` scales XLA's FLOPs, bytes and step time to the analytic count."""
    from trainer import aot
    from trainer.partitioning import Partitioner

    partitioner = Partitioner(mesh_shape=(1, -1, 1))
    w = jax.ShapeDtypeStruct((256, 256), jnp.float32, sharding=partitioner.replicated)
    x = jax.ShapeDtypeStruct((64, 256), jnp.float32, sharding=partitioner.batch_sharding(2))

    def run(length):
        step = lambda w, x: jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=length)[0]
        return aot.analyse(aot.Program("scan", jax.jit(step), (w, x), partitioner, 64), topology.CHIPS["v5p"])
    once, looped = run(1), run(8)
    assert once["xla_loop_scale"] == 1.0
    assert 7 < looped["xla_loop_scale"] < 9, looped
    assert looped["flops_xla_per_device"] == pytest.approx(once["flops_xla_per_device"], rel=0.1)
    assert looped["estimated_step_seconds"] == pytest.approx(8 * once["estimated_step_seconds"], rel=0.2)
    assert 0 < looped["projected_mfu"] <= 1
