"""`python -m noise2music.sample` end to end on runs of the tiny stage configs (random weights in
the trainer's checkpoints, `tests.fakes.fake_trained_run`: the test is of the machinery, not of the
music; `test_n2m_train` trains them): both cascade paths write valid WAV files at 16 and 24 kHz,
spectrogram PNGs and their settings, which `music_eval.evaluate` reads; bad input is named."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests import fakes, helpers

pytestmark = pytest.mark.timeout(900)


def _train(config, model_dir, corpus_dir, seed=0):
    """A run of the tiny config on `corpus_dir` (its SentencePiece model tokenizes the prompts), as
    if trained two steps."""
    return fakes.fake_trained_run(model_dir, f"noise2music/{config}.gin", f"--gin.CORPUS_DIR='{corpus_dir}'", step=2,
                                  seed=seed)


def _sample(*args, devices=8):
    cmd = [sys.executable, "-m", "noise2music.sample", *args]
    return subprocess.run(cmd, cwd=helpers.ROOT, env=helpers.env(devices), capture_output=True, text=True,
                          timeout=600)


def _sample_in_process(capsys, *args):
    """The binary's `main` in this process (for its error paths): (exit status, stderr)."""
    from noise2music import sample

    try:
        sample.main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def _wav(path):
    import soundfile as sf

    x, sr = sf.read(path, dtype="float32")
    return x, sr


def test_waveform_cascade_writes_audio_spectrograms_and_settings(tiny_corpus, tmp_path, capsys):
    corpus_dir = tiny_corpus[0]
    gen = _train("tiny_generator", tmp_path / "gen", corpus_dir)
    cas = _train("tiny_cascader", tmp_path / "cas", corpus_dir, seed=2)
    prompts = tmp_path / "prompts.txt"
    long_prompt = "a slow and " + " ".join(["very"] * 60) + " gentle piano waltz"
    prompts.write_text(f"# comments and blank lines are skipped\n\nsolo piano, slow\n{long_prompt}\n")
    out = tmp_path / "samples"
    p = _sample(f"--prompts={prompts}", f"--out={out}", f"--generator={gen}", f"--cascader={cas}", "--seeds=0,3",
                "--seconds=2", "--generator_steps=uniform:6", "--cascader_steps=back_heavy:0.5,0.3,0.2",
                "--generator_guidance=3")
    assert p.returncode == 0, p.stderr[-4000:]
    summary = helpers.last_json(p.stdout)
    assert summary["samples"] == 4 and summary["stages"] == {"generator": 2, "cascader": 2}
    assert 0 < summary["mean_16k_stats"]["spectral_flatness"] <= 1 and summary["mean_16k_stats"]["rms"] > 0
    assert "truncated to the model's 32" in p.stderr and "prompt 2" in p.stderr        # over-long prompt
    assert "[cascader] batch 1/1 step 3/3" in p.stderr                            # progress per stage and step
    settings = json.loads((out / "settings.json").read_text())
    assert settings["status"] == "completed" and settings["prompts"] == ["solo piano, slow", long_prompt]
    assert settings["stages"]["generator"]["settings"]["guidance"] == 3.0
    assert settings["stages"]["cascader"]["settings"]["gamma"] == 1.0               # the paper's default
    assert settings["stages"]["cascader"]["num_steps"] == 3
    assert settings["stages"]["generator"]["weights"] == "EMA params"
    audio = {}
    for s in settings["samples"]:
        base = f"{s['prompt_index'] + 1:03d}_seed{s['seed']}"
        assert set(s["files"]) == {f"{base}_generator.wav", f"{base}_16k.wav", f"{base}_16k.png", f"{base}_24k.wav"}
        low, sr_low = _wav(out / f"{base}_generator.wav")
        x16, sr16 = _wav(out / f"{base}_16k.wav")
        x24, sr24 = _wav(out / f"{base}_24k.wav")
        assert (sr_low, sr16, sr24) == (3200, 16000, 24000)
        assert (len(low), len(x16), len(x24)) == (6400, 32000, 48000)
        assert np.isfinite(x16).all() and 0 < np.abs(x16).max() <= 1.0
        assert (out / f"{base}_16k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        audio[(s["prompt_index"], s["seed"])] = x16
    assert not np.allclose(audio[(0, 0)], audio[(0, 3)])                              # seeds differ
    # One prompt and seed alone gives the same sample as in the batch of four.
    one = tmp_path / "one.txt"
    one.write_text("solo piano, slow\n")
    p = _sample(f"--prompts={one}", f"--out={tmp_path / 'alone'}", f"--generator={gen}", f"--cascader={cas}",
                "--seeds=3", "--seconds=2", "--generator_steps=uniform:6", "--cascader_steps=back_heavy:0.5,0.3,0.2",
                "--generator_guidance=3")
    assert p.returncode == 0, p.stderr[-3000:]
    np.testing.assert_allclose(_wav(tmp_path / "alone" / "001_seed3_16k.wav")[0], audio[(0, 3)], atol=2e-4)

    # The sampler's folder is what music_eval.evaluate reads: four 2 s clips with their prompts
    # (which no reference recording has: text-free metrics, and cards without a reference).
    from music_eval import eval_set

    eval_set.build(corpus_dir, str(tmp_path / "eval_set"))
    p = subprocess.run([sys.executable, "-m", "music_eval.evaluate", f"--generated={out}",
                        f"--reference={tmp_path / 'eval_set'}", f"--out={tmp_path / 'eval'}", "--embedders=musicnn"],
                       cwd=helpers.ROOT, env=helpers.env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    ev = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert [it["id"] for it in ev["items"]] == ["001_seed0", "001_seed3", "002_seed0", "002_seed3"]
    assert [it["text"] for it in ev["items"]] == ["solo piano, slow"] * 2 + [long_prompt] * 2
    assert all("reference" not in it for it in ev["items"])
    assert ev["systems"]["samples"]["fad"]["musicnn"]["n_generated"] == 4  # one 3 s patch (repeat-padded) each
    assert "no reference recording" in (tmp_path / "eval" / "report.html").read_text()

    # Bad input: each named, exit status 2, nothing written before is lost.
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    bad = tmp_path / "bad_gen"   # a checkpoint that does not fit its config: the parameter is named
    shutil.copytree(gen, bad)
    from etils import epath

    from trainer.checkpoints import write_integrity

    step_dir = epath.Path(next(p for p in (bad / "checkpoints").iterdir() if p.name.isdigit()))
    cfg = (step_dir / "config" / "config.gin").read_text().replace("UNet1D.base = 32", "UNet1D.base = 48")
    (step_dir / "config" / "config.gin").write_text(cfg)
    write_integrity(step_dir)      # Intact (as its writer sealed it), but for another model.
    for args, says in [
        ((f"--prompts={empty}", f"--generator={gen}", f"--cascader={cas}"), ["no prompts in the file", str(empty)]),
        ((f"--prompts={prompts}", f"--generator={cas}", f"--cascader={cas}"),
         ["a 'cascader' stage, given as the 'generator' stage"]),
        ((f"--prompts={prompts}", f"--generator={gen}", f"--cascader={gen}"), ["given as the 'cascader'"]),
        ((f"--prompts={prompts}", f"--generator={gen}"), ["needs --cascader"]),
        ((f"--prompts={prompts}", f"--generator={gen}", f"--cascader={cas}", "--generator_steps=uniform:0"),
         ["step schedule"]),
        ((f"--prompts={prompts}", f"--generator={bad}", f"--cascader={cas}"), ["do not fit the model", "unet/"]),
        ((f"--prompts={prompts}", f"--generator={gen}", f"--cascader={cas}", "--generator_gamma=2"),
         ["--generator_gamma=2.0: must be in [0, 1]"]),
        ((f"--prompts={prompts}", f"--generator={gen}", f"--cascader={cas}", "--cascader_guidance=-1"),
         ["--cascader_guidance=-1.0: must be at least 0"]),
        ((f"--prompts={prompts}", f"--generator={gen}", f"--cascader={cas}", "--seconds=-1"),
         ["--seconds=-1.0: must be positive"]),
        ((f"--prompts={prompts}", f"--generator={gen}", f"--cascader={cas}", f"--out={gen}"),
         ["is not an earlier sampling's output"]),
    ]:
        code, err = _sample_in_process(capsys, f"--out={out}", *args)
        assert code == 2 and all(s in err for s in says), (args, err[-2000:])
    assert json.loads((out / "settings.json").read_text())["status"] == "completed"   # the earlier run's, intact
    assert (out / "001_seed0_16k.wav").exists()


def test_spectrogram_cascade_with_super_resolution(tiny_corpus, tmp_path):
    corpus_dir = tiny_corpus[0]
    spec = _train("tiny_spectrogram_generator", tmp_path / "spec", corpus_dir)
    voc = _train("tiny_vocoder", tmp_path / "voc", corpus_dir, seed=2)
    sr = _train("tiny_super_resolution", tmp_path / "sr", corpus_dir, seed=4)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a string quartet\n")
    out = tmp_path / "samples"
    p = _sample(f"--prompts={prompts}", f"--out={out}", "--path=spectrogram", f"--spectrogram_generator={spec}",
                f"--vocoder={voc}", f"--super_resolution={sr}", "--seconds=1.5",
                "--spectrogram_generator_steps=uniform:5", "--vocoder_steps=uniform:4",
                "--super_resolution_steps=uniform:3", devices=1)
    assert p.returncode == 0, p.stderr[-4000:]
    s = json.loads((out / "settings.json").read_text())
    assert s["status"] == "completed" and "note_24k" not in s
    assert set(s["samples"][0]["files"]) == {"001_seed0_mel.png", "001_seed0_mel.npy", "001_seed0_16k.wav",
                                             "001_seed0_16k.png", "001_seed0_24k.wav"}
    mel = np.load(out / "001_seed0_mel.npy")
    assert mel.shape == (150, 80) and mel.min() >= -1.0 and mel.max() <= 1.0   # 1.5 s; padded to 160, cropped
    x16, r16 = _wav(out / "001_seed0_16k.wav")
    x24, r24 = _wav(out / "001_seed0_24k.wav")
    assert (r16, len(x16), r24, len(x24)) == (16000, 24000, 24000, 36000)
    # Rates that do not chain: super-resolution reads 16 kHz, the generator makes 3.2 kHz.
    from noise2music import cascade, sampler

    stages = [cascade.Stage.from_run(spec, "spectrogram_generator"), cascade.Stage.from_run(sr, "super_resolution")]
    with pytest.raises(cascade.CascadeError, match="super_resolution.*reads 16000 Hz audio"):
        cascade.check_chain(stages)
    # NaN during sampling: the stage and step are named.
    import jax

    st = stages[0]
    st.params = jax.tree.map(lambda x: x * np.nan, st.params)
    with pytest.raises(sampler.SamplingError, match="spectrogram_generator: non-finite values at step 1 of 2"):
        st.sample(seeds=[0], texts=["x"], settings=sampler.Settings(steps="uniform:2"), seconds=0.5)
