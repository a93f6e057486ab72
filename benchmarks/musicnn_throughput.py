"""musicnn inference throughput: the Flax port (music_eval/embedders/musicnn.py) vs the original TF1 graph.

    python benchmarks/musicnn_throughput.py                 # 256 patches (12.8 min of audio), batch 64
    python benchmarks/musicnn_throughput.py --patches=512 --batch=32 --repeats=5

Both run the MTT_musicnn network in float32 on the same seeded log-mel patches ([N, 187, 96]) and
the same cores, each in its own process: ours is one jitted XLA:CPU program per batch (on one
device); the reference is the wheel's own `musicnn.models` graph in a TF1 session, restored
from the same checkpoint (tf_keras's legacy layers, as in tests/integration/test_musicnn.py).  Throughput is
patches (3 s of audio each) per second, the median of `--repeats` timed passes over all patches
after one warm-up.  The tags of the two are compared too.  The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import timing  # benchmarks/timing.py
from timing import median_seconds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _patches(n: int):
    import numpy as np

    return np.random.default_rng(0).uniform(0.0, 3.0, (n, 187, 96)).astype(np.float32)


def _child(method: str, n: int, batch: int, repeats: int, out: str) -> None:
    import numpy as np

    x = _patches(n)
    if method == "ours":
        sys.path.insert(0, ROOT)
        from music_eval.embedders import musicnn

        net = musicnn.Musicnn.load(batch_size=batch)
        run = lambda: net.apply_patches(x)["tags"]
    else:
        import tensorflow as tf

        tf.compat.v1.disable_eager_execution()
        import musicnn as pkg
        from musicnn import models

        ph = tf.compat.v1.placeholder(tf.float32, [None, 187, 96])
        training = tf.compat.v1.placeholder(tf.bool)
        tags = tf.nn.sigmoid(models.define_model(ph, training, "MTT_musicnn", 50)[0])
        sess = tf.compat.v1.Session()
        tf.compat.v1.train.Saver().restore(sess, os.path.dirname(pkg.__file__) + "/MTT_musicnn/")
        run = lambda: np.concatenate([sess.run(tags, {ph: x[s:s + batch], training: False})
                                      for s in range(0, n, batch)])
    seconds = median_seconds(run, repeats)
    np.save(out + ".npy", run())
    with open(out + ".json", "w") as f:
        json.dump({"seconds": seconds}, f)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patches", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--_child", default=None)
    ap.add_argument("--_out", default=None)
    a = ap.parse_args(argv)
    if a._child:
        _child(a._child, a.patches, a.batch, a.repeats, a._out)
        return {}
    import numpy as np

    machine = timing.machine()
    print(timing.machine_line(machine))
    res, tags = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("ours", "original"):
            out = os.path.join(tmp, method)
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",   # the user's XLA flags stay in effect
                       XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=1").strip())
            if method == "original":
                env["TF_USE_LEGACY_KERAS"] = "1"
            cmd = [sys.executable, os.path.abspath(__file__), f"--_child={method}", f"--patches={a.patches}",
                   f"--batch={a.batch}", f"--repeats={a.repeats}", f"--_out={out}"]
            p = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if p.returncode:
                raise SystemExit(f"{method} failed:\n{p.stderr[-3000:]}")
            with open(out + ".json") as f:
                sec = json.load(f)["seconds"]
            tags[method] = np.load(out + ".npy")
            res[method] = {"seconds": round(sec, 3), "patches_per_s": round(a.patches / sec, 1),
                           "audio_x_realtime": round(a.patches * 3.0 / sec, 1)}
            print(f"{method:9s} {a.patches} patches in {sec:.2f} s: {a.patches / sec:.1f} patches/s "
                  f"({a.patches * 3.0 / sec:.0f}x real time)")
    ratio = res["ours"]["patches_per_s"] / res["original"]["patches_per_s"]
    diff = float(np.abs(tags["ours"] - tags["original"]).max())
    print(f"ours / original: {ratio:.2f}x; max |tag difference| {diff:.2e}")
    summary = {"patches": a.patches, "batch": a.batch, "repeats": a.repeats, **{f"{k}_{m}": v for k, d in res.items()
               for m, v in d.items()}, "speedup": round(ratio, 3), "max_tag_diff": diff,
               "machine": machine}
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
