"""`python -m music_eval.evaluate` end to end on the tiny real corpus: an evaluation set from its
held-out split (music_eval.eval_set), a "perfect generator" (the reference recordings themselves), the
same recordings with noise added, and the white-noise and ground-truth rows; MuLan from the tiny
trained run and musicnn.  The metrics order the systems as they must, the cache makes a re-run
embed nothing, the report opens in headless Chromium with no errors and working players, and
bad input is named."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import helpers

pytestmark = pytest.mark.timeout(900)


def _evaluate(*args):
    return subprocess.run([sys.executable, "-m", "music_eval.evaluate", *args], cwd=helpers.ROOT,
                          env=helpers.env(), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def eval_set(tiny_corpus, tmp_path_factory):
    from music_eval import eval_set

    out = str(tmp_path_factory.mktemp("eval_set"))
    res = eval_set.build(tiny_corpus[0], out, split="test")
    rows = [json.loads(line) for line in open(os.path.join(out, "reference.jsonl"))]
    prompts = [ln.strip() for ln in open(os.path.join(out, "prompts.txt")) if not ln.startswith("#")]
    assert res["clips"] == len(rows) == len(prompts) >= 4
    assert prompts == [r["text"] for r in rows] and all(os.path.isabs(r["audio"]) for r in rows)
    return out, rows


def _manifest(path, rows, audio=None):
    with open(path, "w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({"audio": audio[i] if audio else r["audio"], "text": r["text"], "id": f"g{i}"}) + "\n")
    return str(path)


def test_evaluate_scores_orders_and_reports(eval_set, tiny_mulan, tmp_path):
    import soundfile as sf

    ref_dir, rows = eval_set
    mulan_dir = tiny_mulan[0]
    perfect = _manifest(tmp_path / "perfect.jsonl", rows)
    noisy_files = []
    rng = np.random.default_rng(0)
    for i, r in enumerate(rows):
        x, sr = sf.read(r["audio"], dtype="float32")
        p = tmp_path / f"noisy{i}.wav"
        sf.write(p, np.clip(x + 0.05 * rng.standard_normal(len(x)), -1, 1), sr)
        noisy_files.append(f"noisy{i}.wav")  # relative to the manifest
    noisy = _manifest(tmp_path / "noisy.jsonl", rows, noisy_files)
    out = tmp_path / "eval"
    args = [f"--generated={perfect}", f"--reference={ref_dir}", f"--out={out}", f"--mulan={mulan_dir}",
            f"--compare=noisy={noisy}", "--name=perfect", "--fad_inf", "--fad_inf_points=3"]
    p = _evaluate(*args)
    assert p.returncode == 0, p.stderr[-4000:]
    s = helpers.last_json(p.stdout)
    n = len(rows)
    # The reference set scored as a generator: FAD exactly 0 for both embedders, each clip's MuLan
    # audio embedding identical to its reference's, text similarity and tags as the ground truth's.
    assert s["perfect/fad_musicnn"] == pytest.approx(0, abs=1e-6) and s["perfect/fad_mulan"] == pytest.approx(0, abs=1e-6)
    assert s["perfect/fad_mulan_n"] == [n, n] and s["perfect/fad_musicnn_n"][0] == s["perfect/fad_musicnn_n"][1] >= n
    assert s["perfect/mulan_audio_sim"] == pytest.approx(1.0, abs=1e-5)
    assert s["perfect/mulan_audio_sim_shuffled"] < 1.0
    assert s["perfect/mulan_text_sim"] == pytest.approx(s["ground_truth/mulan_text_sim"], abs=1e-6)
    assert s["perfect/musicnn_tags_auc"] == s["ground_truth/musicnn_tags_auc"]
    # Noise added: worse than perfect, better than white noise, on both embedders.
    for e in ("musicnn", "mulan"):
        assert 0 < s[f"noisy/fad_{e}"] < s[f"white_noise/fad_{e}"], e
    assert s["noisy/mulan_audio_sim"] < 1.0
    assert "perfect/fad_inf_musicnn" in s and "ground_truth/fad_musicnn" in s
    report = json.loads((out / "metrics.json").read_text())
    assert list(report["systems"]) == ["ground truth", "perfect", "noisy", "white noise"]
    assert report["embedders"]["musicnn"]["level"] == "frame" and report["embedders"]["mulan"]["level"] == "clip"
    item = report["items"][0]
    assert item["reference"]["audio"] == rows[0]["audio"] and len(item["musicnn_top_tags"]) == 5
    assert item["mulan_audio"] == pytest.approx(1.0, abs=1e-5)
    assert "FAD musicnn" in p.stderr and "white noise" in p.stderr and str(out / "report.html") in p.stderr
    first_misses = s["cache_misses"]
    assert first_misses > 0

    # A re-run embeds nothing: every clip's embedding comes from the cache; the figures are the same.
    p = _evaluate(*args)
    assert p.returncode == 0, p.stderr[-3000:]
    again = helpers.last_json(p.stdout)
    assert again["cache_misses"] == 0 and again["cache_hits"] == first_misses + s["cache_hits"]
    for k, v in s.items():
        if k.startswith(("perfect/", "noisy/", "ground_truth/")):
            assert again[k] == v, k

    # The report in headless Chromium: no console or page errors, every player and image loads.
    from music_eval import browser

    if browser.chromium_path() is None:
        pytest.fail("no Chromium: `bash run.sh setup` installs Debian's chromium")
    res = browser.check(str(out / "report.html"), screenshot=str(tmp_path / "shot.png"))
    assert res["ok"], res
    assert res["audio"] == res["images"] == 2 * n and res["tables"] >= 2
    durations = [min(10.0, r["duration_s"]) for r in rows]
    np.testing.assert_allclose(res["audio_seconds"][::2], durations, atol=0.1)
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_names_bad_input(eval_set, tmp_path, capsys):
    ref_dir, rows = eval_set
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt this is not audio")
    man = tmp_path / "gen.jsonl"
    man.write_text(json.dumps({"audio": str(bad), "text": "solo piano"}) + "\n")
    p = _evaluate(f"--generated={man}", f"--reference={ref_dir}", f"--out={tmp_path / 'o'}", "--embedders=musicnn")
    assert p.returncode == 2 and str(bad) in p.stderr and "cannot decode" in p.stderr
    p = _evaluate(f"--generated={_manifest(tmp_path / 'g.jsonl', rows)}", f"--reference={ref_dir}",
                  f"--out={tmp_path / 'o'}", "--embedders=musicnn,nosuch")
    assert p.returncode == 2 and "unknown embedder 'nosuch'" in p.stderr
    p = _evaluate(f"--generated={tmp_path}", f"--reference={ref_dir}", f"--out={tmp_path / 'o'}")
    assert p.returncode == 2 and "without settings.json" in p.stderr
    man.write_text("{not json\n")
    p = _evaluate(f"--generated={man}", f"--reference={ref_dir}", f"--out={tmp_path / 'o'}")
    assert p.returncode == 2 and f"{man} line 1" in p.stderr
    # Found before any embedding work: exit 2 naming the file, line and field (in-process: no model loads).
    from music_eval import evaluate

    good = _manifest(tmp_path / "g.jsonl", rows)
    one = tmp_path / "one.jsonl"
    one.write_text(open(good).readline())
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes(json.dumps({"audio": "a.wav", "text": "x"}).encode() + b"\n" + b'{"audio": "caf\xe9.wav"}\n')
    listed = tmp_path / "listed.jsonl"
    listed.write_text(json.dumps({"audio": ["a.wav", "b.wav"], "text": "x"}) + "\n")
    for gen, ref, says in [(good, one, "FAD needs at least 2 reference clips"),
                           (latin, ref_dir, f"{latin} line 2: not UTF-8"),
                           (listed, ref_dir, f"{listed} line 1: field 'audio' must be a path")]:
        with pytest.raises(SystemExit) as e:
            evaluate.main([f"--generated={gen}", f"--reference={ref}", f"--out={tmp_path / 'o'}", "--embedders=musicnn"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err, err[-1500:]
