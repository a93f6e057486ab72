"""`python -m trainer.summary`: counts, specs and the JSON last line, from eval_shape only."""
import json
import subprocess
import sys

from tests import helpers


def test_summary_reports_params_and_specs_for_a_large_mesh():
    # 256 devices: far more than this machine has -- only shapes are computed.
    p = subprocess.run([sys.executable, "-m", "trainer.summary", "--gin_file=toy/tiny_cpu.gin",
                        "--mesh=fsdp_tensor", "--gin.Partitioner.mesh_shape=(1, -1, 4)",
                        "--num_devices=256", "--gin.ToyModel.embed_dim=256", "--gin.ToyModel.mlp_dim=1024"],
                       cwd=helpers.ROOT, env=helpers.env(devices=1), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["mesh"] == {"data": 1, "fsdp": 64, "tensor": 4}
    # embed 256, mlp 1024, 2 layers: attention 4*256*256 + mlp 2*256*1024 + biases/norms per layer.
    per_layer = 4 * 256 * 256 + 2 * 256 * 1024 + 1024 + 256 + 4 * 256
    assert out["per_module"]["block_0"] == per_layer
    assert out["total_params"] == sum(out["per_module"].values())
    assert "block_0/mlp_in/kernel" in p.stdout and "P('fsdp', 'tensor')" in p.stdout
    assert out["not_divisible"] == []


def test_summary_reports_dims_the_mesh_does_not_divide():
    from trainer.partitioning import FSDP_TENSOR_RULES
    from trainer.summary import summarize
    from trainer.toy import ToyModel

    out = summarize(ToyModel(embed_dim=96, num_heads=4, mlp_dim=192), FSDP_TENSOR_RULES, (1, 64, 4), 8)
    assert "block_0/mlp_in/kernel: dim 96 over fsdp (64)" in out["not_divisible"]
    assert not any("mlp_in/bias" in m for m in out["not_divisible"])  # 192 % 4 == 0


def test_summary_counts_the_train_state_bytes_without_the_frozen_moments_and_ema():
    from trainer import optimizers
    from trainer.partitioning import FSDP_TENSOR_RULES
    from trainer.summary import summarize
    from trainer.toy import ToyModel

    head = 32 * 4 + 4   # ToyModel's head: kernel [embed 32, classes 4] + bias
    out = summarize(ToyModel(), FSDP_TENSOR_RULES, (1, 1, 1), 8, optimizers.adam(1e-3), ema=True, frozen=["^head/"])
    sb, n = out["state_bytes"], out["total_params"]
    assert out["frozen_params"] == head
    assert sb["params"] == 4 * n and sb["ema"] == 4 * (n - head)
    assert sb["optimizer"] == 2 * 4 * (n - head) + 4       # mu, nu and Adam's int32 step count
    assert sb["total"] == sb["params"] + sb["optimizer"] + sb["ema"]
