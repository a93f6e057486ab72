"""The data issue end to end: a tiny corpus of real music21 and MMA material, built inside the
test run, read back through the seqio tasks; users' audio ingest; bad input; tokenizers."""
import json
import os
import shutil

import numpy as np
import pytest

from data import audio as audio_lib

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def corpus(tiny_corpus):
    return tiny_corpus


def test_corpus_has_real_music_metadata_and_work_splits(corpus):
    out, report, rows = corpus
    assert report["sources"]["music21"] == 9 and report["sources"]["mma"] == 9
    # The broken MIDI file is skipped and reported with its reason; nothing else is lost.
    assert report["failed"] == 1 and report["skipped"][0]["work_id"] == "midi:broken.mid"
    assert "cannot read MIDI file" in report["skipped"][0]["reason"]
    assert "broken.mid" in report["skipped"][0]["reason"]
    train = {r["work_id"] for r in rows if r["split"] == "train"}
    test = {r["work_id"] for r in rows if r["split"] == "test"}
    assert train and test and not train & test
    for r in rows:
        for key in ("work_id", "collection", "instruments", "tempo_bpm", "key", "time_signature", "soundfont",
                    "duration_s", "tags", "texts", "text_ok"):
            assert key in r, (key, r["clip_id"])
        x, sr = audio_lib.load_audio(os.path.join(out, r["audio"]["16000"]))
        assert sr == 16000 and 10.5 < len(x) / sr < 12.5 and np.abs(x).max() > 0.1
        assert r["tags"]["instrument"], r["clip_id"]
    mma = [r for r in rows if r["source"] == "mma"]
    assert all(r["groove_description"] and r["style_family"] for r in mma)
    assert any("drums" in r["tags"]["instrument"] for r in mma)
    fiddle = [r for r in rows if r.get("collection") == "fiddle_tunes"]
    assert all(r["title"] for r in fiddle)
    assert len({r["soundfont"] for r in rows}) >= 2


def test_corpus_build_is_deterministic_for_a_seed(corpus, tmp_path):
    from data import corpus as corpus_lib

    out, _, rows = corpus
    again = corpus_lib.build("tiny", str(tmp_path), seed=0, workers=1, test_fraction=0.35, max_clips=4,
                               write_records=False, progress=False)
    assert again["clips"] == 4
    rows2 = [json.loads(line) for line in open(tmp_path / "manifest.jsonl")]
    for a, b in zip(rows, rows2):
        assert a["clip_id"] == b["clip_id"] and a["texts"] == b["texts"]
        xa, _ = audio_lib.load_audio(os.path.join(out, a["audio"]["16000"]))
        xb, _ = audio_lib.load_audio(str(tmp_path / b["audio"]["16000"]))
        np.testing.assert_array_equal(xa, xb)


def _mulan_ds(corpus_dir, seed, split="train", task="mulan_weak_text", shard=None):
    import seqio

    from data import tasks
    from data.feature_converters import AudioTextFeatureConverter

    name = tasks.corpus_task(task, corpus_dir=corpus_dir, audio_samples=160000)
    return seqio.get_dataset(name, task_feature_lengths={"audio": 160000, "text_tokens": 24}, dataset_split=split,
                             shuffle=True, seed=seed, feature_converter=AudioTextFeatureConverter(), shard_info=shard)


def test_mulan_task_reads_the_corpus(corpus):
    from data.vocab import BertWordPieceVocabulary

    TEXT_VOCAB = BertWordPieceVocabulary()
    out, _, rows = corpus
    batches = list(_mulan_ds(out, seed=1).batch(4).take(3).as_numpy_iterator())
    again = list(_mulan_ds(out, seed=1).batch(4).take(3).as_numpy_iterator())
    for b, c in zip(batches, again):  # deterministic for a seed (crops and text draws)
        np.testing.assert_array_equal(b["audio"], c["audio"])
        np.testing.assert_array_equal(b["text_tokens"], c["text_tokens"])
    b = batches[0]
    assert b["audio"].shape == (4, 160000) and b["audio"].dtype == np.float32
    assert b["text_tokens"].shape == (4, 24)
    assert (b["text_tokens"][:, 0] == TEXT_VOCAB.cls_id).all()
    for toks, mask in zip(b["text_tokens"], b["text_mask"]):
        n = int(mask.sum())
        assert toks[n - 1] == TEXT_VOCAB.eos_id and (toks[n:] == 0).all()
    texts = {TEXT_VOCAB.decode(t.tolist()) for bb in batches for t in bb["text_tokens"]}
    assert len(texts) > 4
    other = next(_mulan_ds(out, seed=2).batch(4).as_numpy_iterator())
    assert not np.array_equal(other["audio"], b["audio"])


def test_n2m_task_reads_the_24khz_records_for_super_resolution(corpus, tmp_path):
    """A crop at 24 kHz (SOURCE_RATE = 24000) reads `records_24000/` (3.2 s = 76,800 samples, the same
    clips as the 16 kHz records); a corpus built without that rate is named with the fix."""
    import seqio

    from data import tasks
    from data.feature_converters import AudioTextFeatureConverter

    out, _, rows = corpus
    assert os.path.isdir(os.path.join(out, "records_24000")) and "24000" in rows[0]["audio"]
    name = tasks.corpus_task("n2m_weak_text", corpus_dir=out, audio_samples=76800, sample_rate=24000)
    ds = seqio.get_dataset(name, task_feature_lengths={"audio": 76800, "text_tokens": 16},
                           dataset_split="train", shuffle=False, feature_converter=AudioTextFeatureConverter())
    b = next(ds.batch(2).as_numpy_iterator())
    assert b["audio"].shape == (2, 76800) and np.abs(b["audio"]).max() > 0.01
    # The 24 kHz clip has energy above 8 kHz only if rendered at 24 kHz (not resampled from 16 kHz).
    spec = np.abs(np.fft.rfft(b["audio"], axis=1))
    hi = spec[:, int(8200 / 12000 * spec.shape[1]):].sum(1) / spec.sum(1)
    assert (hi > 1e-4).all(), hi
    bare = tmp_path / "bare"
    shutil.copytree(out, bare, ignore=shutil.ignore_patterns("records_24000", "audio", "midi"))
    with pytest.raises(FileNotFoundError, match="records_24000.*--sample_rates=16000,24000"):
        tasks.corpus_task("n2m_weak_text", corpus_dir=str(bare), audio_samples=76800, sample_rate=24000)


def test_mulan_eval_task_has_tags_of_held_out_works(corpus):
    import seqio

    from data import tasks

    out, _, rows = corpus
    ds = seqio.get_mixture_or_task(tasks.corpus_task("mulan_eval", corpus_dir=out)).get_dataset(
        None, split="test", shuffle=False)
    exs = list(ds.as_numpy_iterator())
    test_rows = {r["clip_id"]: r for r in rows if r["split"] == "test"}
    assert {e["clip_id"].decode() for e in exs} == set(test_rows)
    for e in exs:
        r = test_rows[e["clip_id"].decode()]
        assert [t.decode() for t in e["tag_instrument"]] == r["tags"]["instrument"]
        x, _ = audio_lib.load_audio(os.path.join(out, r["audio"]["16000"]))
        np.testing.assert_allclose(e["audio"], x[:160000], atol=1e-4)


def test_mulan_task_position_restores_exactly_per_host(corpus):
    """The trainer's seqio iterator on this task: 2 hosts, state saved and restored exactly."""
    from data import tasks
    from data.feature_converters import AudioTextFeatureConverter
    from trainer.input_pipeline import SeqioData
    from trainer.partitioning import DataLayout

    out, _, _ = corpus
    src = SeqioData(tasks.corpus_task("mulan_weak_text", corpus_dir=out),
                    task_feature_lengths={"audio": 160000, "text_tokens": 24},
                    feature_converter=AudioTextFeatureConverter)
    it = src.make_iterator(DataLayout(4, 2, 1, 2), seed=7)
    next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(2)]
    fresh = src.make_iterator(DataLayout(4, 2, 1, 2), seed=7)
    fresh.set_state(state)
    for e in expected:
        got = next(fresh)
        np.testing.assert_array_equal(got["audio"], e["audio"])
        np.testing.assert_array_equal(got["text_tokens"], e["text_tokens"])


def test_text_mixture_follows_its_weights():
    """The source draw: 2:2:1:1 when every source has text; unavailable sources are skipped."""
    import seqio
    import tensorflow as tf

    from data import preprocessors

    n = 3000

    def examples(with_long):
        ex = {"text_short": ["s1", "s2"], "text_long": ["l1"] if with_long else [], "text_playlist": ["p"],
              "text_label": ["c"], "ok_short": [1, 0], "ok_long": [1] if with_long else [], "ok_playlist": [1],
              "ok_label": [1]}
        return tf.data.Dataset.from_tensors({k: tf.constant(v, tf.string if k.startswith("text") else tf.int64)
                                             if v else tf.constant([], tf.string if k.startswith("text") else tf.int64)
                                             for k, v in ex.items()}).repeat(n)

    with seqio.utils.map_seed_manager(123):
        ds = preprocessors.choose_text()(examples(True))
        got = [(int(e["text_source"]), e["text"].decode()) for e in ds.as_numpy_iterator()]
    counts = np.bincount([s for s, _ in got], minlength=4) / n
    np.testing.assert_allclose(counts, [2 / 6, 2 / 6, 1 / 6, 1 / 6], atol=0.03)
    assert all(t != "s2" for _, t in got)  # filtered out by its mark
    with seqio.utils.map_seed_manager(5):
        got = [int(e["text_source"]) for e in preprocessors.choose_text()(examples(False)).as_numpy_iterator()]
    np.testing.assert_allclose(np.bincount(got, minlength=4) / n, [0.5, 0, 0.25, 0.25], atol=0.03)


def test_fft_resample_matches_a_sine():
    import tensorflow as tf

    from data import preprocessors

    t = np.arange(24000) / 24000.0
    x = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    y = preprocessors.crop_and_resample(tf.constant(x), tf.constant(24000), seconds=1.0, model_rate=16000,
                                        start=tf.constant(0)).numpy()
    ref = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000.0)
    assert y.shape == (16000,)
    np.testing.assert_allclose(y[100:-100], ref[100:-100], atol=2e-3)
    np.testing.assert_allclose(audio_lib.resample(x, 24000, 16000)[100:-100], ref[100:-100], atol=2e-3)


def test_ingest_users_audio_with_bad_files(corpus, tmp_path):
    import soundfile as sf
    import tensorflow as tf

    from data import ingest, records

    out, _, rows = corpus
    src = tmp_path / "music"
    src.mkdir()
    x, _ = audio_lib.load_audio(os.path.join(out, rows[0]["audio"]["16000"]))
    x44 = audio_lib.resample(x, 16000, 44100)
    sf.write(src / "stereo44k.wav", np.stack([x44, 0.5 * x44], 1), 44100)
    sf.write(src / "mono.flac", x, 16000)
    sf.write(src / "mono.ogg", x, 16000, format="OGG", subtype="VORBIS")
    sf.write(src / "silent.wav", np.zeros(16000, np.float32), 16000)
    (src / "empty.wav").write_bytes(b"")
    good = (src / "mono.flac").read_bytes()
    (src / "truncated.flac").write_bytes(good[: len(good) // 3])
    (src / "garbage.mp3").write_bytes(b"ID3" + os.urandom(2000))
    (src / "no_text.wav").write_bytes((src / "mono.flac").read_bytes())
    wav = (src / "stereo44k.wav").read_bytes()
    (src / "truncated.wav").write_bytes(wav[: len(wav) * 2 // 3])   # libsndfile reads it as a shorter clip
    lines = [json.dumps({"file": f, "short": ["piano"], "long": ["A slow piece."]}) for f in
             ("stereo44k.wav", "mono.flac", "mono.ogg", "silent.wav", "empty.wav", "truncated.flac", "garbage.mp3",
              "truncated.wav")]
    lines += [json.dumps({"file": "missing.wav", "text": "x"}), json.dumps({"short": ["no file column"]}),
              json.dumps({"file": "mono.ogg", "short": ["  "]}),
              json.dumps({"file": "mono.flac", "short": ["a second row"]}),
              json.dumps({"file": "no_text.wav", "short": "rock"}),
              json.dumps({"file": "no_text.wav", "short": ["x"], "tags": {"genre": [7]}}),
              json.dumps({"file": "no_text.wav", "short": ["x"], "split": "../../outside"}),
              json.dumps({"file": "../outside.wav", "short": ["x"]}),
              json.dumps({"file": "no_text.wav", "shrot": ["x"]})]
    (tmp_path / "texts.jsonl").write_bytes(("\n".join(lines) + "\n").encode() + b'{"file": "\xff\xfe.wav"}\n')
    dst = tmp_path / "records_out"
    texts = str(tmp_path / "texts.jsonl")
    r = ingest.main(["--audio_dir", str(src), "--texts", texts, "--out", str(dst), "--per_shard=2"])
    fails = [json.loads(line) for line in open(dst / "records" / "failures.jsonl")]
    reasons = {f["item"]: f["reason"] for f in fails}
    assert "silent" in reasons["silent.wav"] and "empty" in reasons["empty.wav"]
    assert "garbage.mp3" in reasons and "truncated.flac" in reasons
    assert "not found" in reasons["missing.wav"] and "no row" in reasons["no_text.wav"]
    assert any("not UTF-8" in v for v in reasons.values()) and any("'file'" in v for v in reasons.values())
    assert any("no non-empty text" in v for v in reasons.values())
    assert "data chunk declares" in reasons["truncated.wav"]
    by_field = " | ".join(reasons.values())
    for why in ("a second row for mono.flac (the first, line 2, is used", "field 'short': expected a list of strings",
                "field 'tags.genre': expected a list of strings", "field 'split': \"../../outside\" is not a split",
                "is not a path inside --audio_dir", "unknown field 'shrot'"):
        assert why in by_field, why
    assert r["failures"] == len(fails) == 16 and r["audio_files"] == 9 and r["with_text"] == 8
    assert not (tmp_path / "outside").exists() and sorted(os.listdir(dst)) == ["records"]

    def read(d):
        got = {}
        for f in sorted(tf.io.gfile.glob(str(d / "records" / "train-*.tfrecord"))):
            for raw in tf.data.TFRecordDataset(f):
                ex = tf.io.parse_single_example(raw, records.feature_spec())
                got[ex["clip_id"].numpy().decode()] = (os.path.basename(f), ex)
        return got

    got = read(dst)
    # mono.ogg's second row (blank text) is rejected; its first row stands.  8 clips, 2 per shard: 4 shards.
    assert set(got) == {"stereo44k.wav", "mono.flac", "mono.ogg"}
    assert int(got["stereo44k.wav"][1]["sample_rate"]) == 16000
    assert r["splits"]["train"] == dict(shards=4, examples=3, skipped=5, shards_written=4, shards_kept=0)
    for clip, (shard, _) in got.items():
        assert shard == records.shard_name("train", ingest.bucket(clip, 4), 4)
    # The same output on another parallelism: every shard and the failures, byte for byte.
    other = tmp_path / "threads"
    ingest.run(str(src), texts, str(other), per_shard=2,
               beam_args=["--direct_num_workers=2", "--direct_running_mode=multi_threading"])

    def files(d):
        return {f: (d / "records" / f).read_bytes() for f in os.listdir(d / "records")
                if f not in (ingest.SIDECARS, "INGEST.json")}   # INGEST.json: also what this run wrote

    assert files(other) == files(dst)
    # Resume: a missing shard is rewritten, complete ones are kept as they are (nothing decoded).
    shards = sorted(f for f in os.listdir(dst / "records") if f.endswith(".tfrecord"))
    mtimes = {f: os.path.getmtime(dst / "records" / f) for f in shards}
    lost = got["stereo44k.wav"][0]
    os.remove(dst / "records" / lost)
    (dst / "records" / (lost + ".tmp-deadbeef")).write_bytes(b"a killed attempt's")
    r2 = ingest.run(str(src), texts, str(dst), per_shard=2)
    assert r2["splits"]["train"]["shards_written"] == 1 and r2["splits"]["train"]["shards_kept"] == 3
    assert all(os.path.getmtime(dst / "records" / f) == mtimes[f] for f in shards if f != lost)
    assert files(dst) == files(other)   # Kept shards' failures too; the temporary file is gone.
    # New inputs: 9 clips need 8 shards, so every clip moves; nothing stale is left beside them.
    sf.write(src / "added.flac", x, 16000)
    with open(texts, "a") as f:
        f.write(json.dumps({"file": "added.flac", "short": ["an added file"]}) + "\n")
    r3 = ingest.run(str(src), texts, str(dst), per_shard=2)
    shards = sorted(f for f in os.listdir(dst / "records") if f.endswith(".tfrecord"))
    assert r3["removed_stale_shards"] == 4 and len(shards) == r3["splits"]["train"]["shards"] == 8
    assert all(f.endswith("-of-00008.tfrecord") for f in shards)
    assert sorted(read(dst)) == ["added.flac", "mono.flac", "mono.ogg", "stereo44k.wav"]
    assert sorted(os.listdir(dst / "records" / ingest.SIDECARS)) == [f + ".json" for f in shards]
    # A typo'd flag is named, not passed to Beam to be dropped with a warning.
    with pytest.raises(SystemExit) as e:
        ingest.main(["--audio_dir", str(src), "--texts", texts, "--out", str(dst), "--per_shrad=2"])
    assert e.value.code == 2


def test_mp3_is_decoded_and_ingested(corpus, tmp_path):
    """A real MP3 (stereo, 44.1 kHz, encoded from a corpus clip) decodes to the clip and ingests."""
    import soundfile as sf

    from data import ingest

    out, _, rows = corpus
    x, _ = audio_lib.load_audio(os.path.join(out, rows[0]["audio"]["16000"]))
    x44 = audio_lib.resample(x, 16000, 44100)
    src = tmp_path / "mp3"
    src.mkdir()
    sf.write(src / "song.mp3", np.stack([x44, x44], 1), 44100, format="MP3")
    y, sr = audio_lib.load_audio(str(src / "song.mp3"), 16000)
    assert sr == 16000 and abs(len(y) - len(x)) < 0.02 * len(x)
    # MP3 is lossy and may shift by its encoder delay: compare loudness and best-lag correlation.
    assert abs(np.sqrt(np.mean(y ** 2)) / np.sqrt(np.mean(x ** 2)) - 1) < 0.1
    lags = range(-2000, 2001, 1)
    seg = slice(4000, 4000 + 16000)
    best = max(np.corrcoef(x[seg], y[seg.start + lag:seg.stop + lag])[0, 1] for lag in lags if seg.start + lag >= 0)
    assert best > 0.95
    (tmp_path / "t.jsonl").write_text(json.dumps({"file": "song.mp3", "short": ["an mp3"]}) + "\n")
    r = ingest.run(str(src), str(tmp_path / "t.jsonl"), str(tmp_path / "rec"), per_shard=2)
    assert r["splits"]["train"]["examples"] == 1 and r["splits"]["train"]["skipped"] == 0


def test_audio_errors_name_the_file(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF1234WAVEjunk")
    with pytest.raises(audio_lib.AudioError, match=r"a\.wav: cannot decode"):
        audio_lib.load_audio(str(tmp_path / "a.wav"))
    with pytest.raises(audio_lib.AudioError, match="does not exist"):
        audio_lib.load_audio(str(tmp_path / "nope.flac"))


def test_wordpiece_vocab_python_and_tf_agree():
    import tensorflow as tf

    from data.vocab import BertWordPieceVocabulary, default_wordpiece_path

    folder = os.path.dirname(default_wordpiece_path())
    texts = ["Sustained strings and arpeggios.", "A gentle Latin rhythm, à la Jobim!", "Straßen-Walzer 120bpm"]
    for path in (os.path.join(folder, "vocab.txt"), os.path.join(folder, "tokenizer.json"), folder):
        v = BertWordPieceVocabulary(path)
        assert v.vocab_size == 30522 and v.cls_id == 101 and v.eos_id == 102 and v.pad_id == 0
        for t in texts:
            ids = v.encode(t)
            assert ids == v.encode_tf(tf.constant(t)).numpy().tolist()
        assert v.decode(v.encode(texts[0])) == texts[0].lower()
    assert BertWordPieceVocabulary(os.path.join(folder, "vocab.txt")).encode("arpeggios") == [12098, 5051, 20650, 2015]


def test_sentencepiece_trained_on_the_corpus(corpus, tmp_path):
    from data import vocab

    out, _, _ = corpus
    path = vocab.train_sentencepiece(out, str(tmp_path / "spm"), vocab_size=200)
    v = vocab.T5SentencePieceVocabulary(path)
    ids = v.encode("sustained strings")
    assert ids and v.decode(ids) == "sustained strings"


def test_text_filter_rules_and_classifier():
    from data import text_filter

    assert text_filter.short_form_ok("bossa nova") and text_filter.short_form_ok("3/4")
    for junk in ("BWV 432", "A0001", "track 03", "someone@example.org", "FluidR3_GM", "0811-0899.abc", "Op. 18"):
        assert not text_filter.short_form_ok(junk), junk
    cv = text_filter.cross_validate()
    assert cv["accuracy"] > 0.78 > cv["majority_baseline"]
    clf = text_filter.default_long_form_filter()
    assert clf("Sustained strings and a walking bass.") and not clf("Transcribed by John Smith, 1997.")


def test_missing_corpus_is_a_clear_error_naming_the_command(tmp_path, monkeypatch):
    from data import paths, tasks

    with pytest.raises(FileNotFoundError, match=f"no built corpus in {tmp_path}.*data.build_corpus --preset demo "
                                                f"--out {tmp_path}"):
        paths.corpus_dir(str(tmp_path))
    monkeypatch.setenv("N2M_CACHE_DIR", str(tmp_path / "cache"))   # looking a task up builds nothing
    with pytest.raises(FileNotFoundError, match="the demo corpus.*`python -m data.build_corpus --preset demo`"):
        tasks.corpus_task("mulan_weak_text")
    assert not (tmp_path / "cache").exists()


def test_build_corpus_cli_prints_json_and_skips_a_built_corpus(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "data.build_corpus", "--preset", "tiny", "--out", str(tmp_path / "c"),
           "--max_clips", "2", "--workers", "1", "--no_progress"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    last = json.loads(p.stdout.strip().splitlines()[-1])
    assert last["clips"] == 2 and os.path.exists(tmp_path / "c" / "corpus.json")
    assert f"corpus written to {tmp_path / 'c'}" in p.stdout
    p = subprocess.run(cmd + ["--skip_if_built"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "already built" in p.stdout and json.loads(p.stdout.splitlines()[-1])["skipped"]
    shutil.rmtree(tmp_path / "c")


def test_corpus_dir_macro_from_gin_flags(corpus, tmp_path):
    """A config that includes datasets/corpus.gin; `--gin.CORPUS_DIR=...` points the task at a corpus,
    registered with the config's frozen settings when the config is evaluated."""
    import gin
    import seqio

    from trainer import flags, train  # noqa: F401 -- registers the configurable `train` the config binds

    out, _, _ = corpus
    (tmp_path / "exp.gin").write_text("include 'datasets/corpus.gin'\nTASK = 'mulan_weak_text'\nAUDIO_SAMPLES = 32000\n"
                                      "SOURCE_RATE = 16000\nTEXT_LENGTH = 8\ncorpus_task.text_weights = (1, 0, 0, 0)\n")
    gin.clear_config()
    flags.apply(flags.parse_argv([f"--gin_file={tmp_path / 'exp.gin'}", f"--gin.CORPUS_DIR='{out}'"]))
    task = seqio.get_mixture_or_task(flags.bound("SeqioData.mixture_or_task_name"))
    assert out in repr(task.source)
    ex = next(task.get_dataset({"audio": 32000, "text_tokens": 8}, split="train", shuffle=False).as_numpy_iterator())
    assert ex["audio"].shape == (32000,)       # the crop is AUDIO_SAMPLES
    gin.clear_config()
    with pytest.raises(flags.FlagError, match="CORPUS_DIRR"):
        flags.apply(flags.parse_argv([f"--gin_file={tmp_path / 'exp.gin'}", "--gin.CORPUS_DIRR='/x'"]))
    gin.clear_config()


def test_build_fails_early_when_the_disk_cannot_hold_the_corpus(tmp_path):
    from data.corpus import check_disk_space

    check_disk_space(str(tmp_path), 15.0, 10, 10, [16000], True)  # a few clips fit
    with pytest.raises(SystemExit, match=r"needs up to \d+\.\d GB .* GB is free.*--max_clips"):
        check_disk_space(str(tmp_path), 30.0, 10**7, 10**7, [16000, 24000], True)


def test_full_preset_plan_gives_every_clip_its_own_id():
    """Quartet movements share their work (and split) but not their clip id or seed."""
    from data import corpus

    specs = corpus.plan("full", 0, ["sf"], [], 0.1)
    assert len({s["clip_id"] for s in specs}) == len(specs) == 19560
    movements = [s for s in specs if "/movement" in (s["work"].get("path") or "")]
    assert movements and len({s["clip_seed"] for s in movements}) == len(movements)
    by_work = {}
    for s in movements:
        by_work.setdefault(s["work"]["work_id"], set()).add(s["split"])
    assert all(len(v) == 1 for v in by_work.values())
