"""Pseudo-labelling end to end on real corpus material: the caption bank (midicap, templates, and
a language model over real HTTP), bank and clip embeddings with a trained MuLan, the exported
labels against brute force, the seqio task's batches, and the audit."""
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from data import matching
from pseudo_labels import bank as bank_lib
from pseudo_labels import write_bank


@pytest.fixture(scope="module")
def bank(tiny_corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bank"))
    stats = write_bank.main(["--corpus", tiny_corpus[0], "--out", out, "--writers", "template,midicap",
                           "--samples", "midicap=2,template=3", "--no_progress"])
    return out, stats


def test_caption_bank_from_corpus_is_clean_and_resumable(bank, tiny_corpus, capsys, tmp_path):
    out, stats = bank
    rows = tiny_corpus[2]
    train_works = {r["work_id"] for r in rows if r["split"] == "train"}
    assert stats["songs"] == len(train_works) and stats["jobs_failed"] == 0
    bank_rows, tags = bank_lib.read_bank(out)
    assert len(bank_rows) == stats["captions"] > 3 * len(train_works)
    assert {b["writer"] for b in bank_rows} == {"midicap", "template"}
    assert {b["song_id"] for b in bank_rows} <= train_works
    people = {r["composer"].split()[-1].lower() for r in rows if r.get("composer")}
    for b in bank_rows:
        assert not any(p in b["text"].lower().split() for p in people), b  # names removed
    keys = [" ".join(b["text"].lower().split()) for b in bank_rows]
    assert len(set(keys)) == len(keys)
    pw = stats["per_writer"]["midicap"]
    assert pw["sentences"] == pw["kept"] + pw.get("dropped_filter", 0) + pw.get("dropped_duplicate", 0) + pw.get(
        "dropped_names", 0)
    cats = {t["category"] for t in tags}
    assert {"genre", "instrument", "mood", "tempo"} <= cats and any(t["text"] == "piano" for t in tags)
    again = write_bank.main(["--corpus", tiny_corpus[0], "--out", out, "--writers", "template,midicap",
                           "--samples", "midicap=2,template=3", "--no_progress"])
    assert again["jobs_run"] == 0 and again["captions"] == stats["captions"]
    # stdout survives the writer threads and ends in the JSON line
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["captions"] == stats["captions"]
    human_out = str(tmp_path / "human")
    human = write_bank.main(["--corpus", tiny_corpus[0], "--out", human_out, "--writers", "human", "--no_progress"])
    assert human["per_writer"]["human"]["answers"] > 0 and all(
        len(re.findall(r"[A-Za-z]{2,}", b["text"])) >= 3 for b in bank_lib.read_bank(human_out)[0])


class _LM(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/completions endpoint with scripted failures."""
    calls: list = []
    fail_once: set = set()
    slow_once: set = set()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        title = body["prompt"].rsplit('"', 2)[-2]
        type(self).calls.append(title)
        if title == "Forbidden Song":
            self.send_response(400), self.end_headers(), self.wfile.write(b"bad request")
            return
        if title in self.fail_once:
            self.fail_once.discard(title)
            self.send_response(503), self.end_headers()
            return
        if title in self.slow_once:
            self.slow_once.discard(title)
            time.sleep(1.5)
        artist = body["prompt"].rsplit(" by ", 1)[-1].rstrip(" :")
        inst = {"Morning Lake": "harp", "Night Train": "accordion"}.get(title, "flute")
        choices = [{"text": f' A gentle acoustic folk ballad with soft {inst} and violin, take {i}. "{title}" by '
                            f"{artist} is a slow, warm song with a calm {inst} melody.\n"}
                   for i in range(body.get("n", 1))]
        data = json.dumps({"choices": choices}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:  # the client timed out first (the scripted slow answer)
            pass

    def log_message(self, *a):
        pass


def test_language_model_writer_over_http_retries_times_out_and_resumes(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    songs = tmp_path / "songs.jsonl"
    songs.write_text("\n".join(json.dumps(s) for s in [
        {"id": "a", "title": "Morning Lake", "artist": "Anna Lindqvist"},
        {"id": "b", "title": "Forbidden Song", "artist": "Nobody"},
        {"id": "c", "title": "Night Train", "artist": "The Foxes"}]) + "\n")
    _LM.fail_once, _LM.slow_once, _LM.calls = {"Morning Lake"}, {"Night Train"}, []
    out = tmp_path / "bank"
    args = ["--songs", str(songs), "--out", str(out), "--writers", "lm", "--samples", "lm=2",
            "--lm_url", f"http://127.0.0.1:{server.server_port}", "--lm_timeout_s", "0.5", "--lm_retries", "2",
            "--no_progress", "--workers", "2"]
    try:
        s = write_bank.main(args)
        assert s["jobs_run"] == 3 and s["jobs_failed"] == 1 and s["lm_retries"] == 2  # one 503, one timeout
        fail = [json.loads(x) for x in open(out / "failures.jsonl")]
        assert fail[0]["song_id"] == "b" and "HTTP 400" in fail[0]["error"]
        bank_rows, _ = bank_lib.read_bank(str(out))
        texts = [b["text"] for b in bank_rows]
        assert {b["song_id"] for b in bank_rows} == {"a", "c"}
        for t in texts:  # titles and artists gone, sentence kept
            for name in ("Morning Lake", "Lindqvist", "Night Train", "Foxes"):
                assert name.lower() not in t.lower(), t
        assert any(t.startswith("A gentle acoustic folk ballad") for t in texts)
        _LM.calls = []
        again = write_bank.main(args)  # resumes: only the failed song is asked again
        assert again["jobs_resumed"] == 2 and _LM.calls == ["Forbidden Song"]
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def labels(bank, tiny_mulan, tmp_path_factory):
    from pseudo_labels import label

    model_dir, corpus_dir = tiny_mulan
    out = str(tmp_path_factory.mktemp("labels"))
    s = label.main(["--model_dir", model_dir, "--bank", bank[0], "--corpus", corpus_dir, "--out", out,
                    "--k", "10", "--k_prime", "3", "--tag_k", "10", "--tag_k_prime", "6", "--no_progress"])
    return out, s


def test_exported_labels_are_the_exact_top_k_and_draws_from_it(labels, tiny_corpus):
    from data.embedding_store import read_embeddings

    out, s = labels
    rows = tiny_corpus[2]
    assert s["clips"] == len(rows) and s["clip_failures"] == 0
    lab = [json.loads(x) for x in open(os.path.join(out, "labels.jsonl"))]
    assert {x["clip_id"] for x in lab} == {r["clip_id"] for r in rows}
    emb = os.path.join(out, "embeddings")
    cap_ids, cap, _ = read_embeddings(emb, "captions")
    clip_ids, clips, _ = read_embeddings(emb, "clips")
    _, want = matching.brute_force_topk(clips, cap, 10)
    got = {x["clip_id"]: x for x in lab}
    scores = clips @ cap.T
    for i, cid in enumerate(clip_ids):
        top = [c for c, _ in got[cid]["top_k"]]
        ref = [cap_ids[j] for j in want[i]]
        kth = np.sort(scores[i])[::-1][9]
        # the same set except ties at the k-th score, best first (order free only among near-ties:
        # the export scores in float32 on device, brute force in numpy)
        above = lambda cs: {c for c in cs if scores[i, cap_ids.index(c)] > kth + 1e-6}
        assert above(top) == above(ref)
        top_scores = np.array([scores[i, cap_ids.index(c)] for c in top])
        assert (np.diff(top_scores) <= 1e-6).all(), top_scores
        picks = got[cid]["captions"]
        assert len(picks) == 3 and {p["id"] for p in picks} <= set(top)
        assert len(got[cid]["tags"]) == 6
    counts = np.load(os.path.join(out, "counts.npz"))
    assert counts["captions"].sum() == 10 * len(clip_ids) and counts["tags"].sum() == 10 * len(clip_ids)
    # Embeddings are computed once: a re-run reuses them (no embed timings) and draws the same labels.
    from pseudo_labels import labelling

    cfg = json.load(open(os.path.join(out, "pseudo_labels.json")))
    again = labelling.build(cfg["model_dir"], cfg["bank_dir"], cfg["corpus_dir"], out, progress=False)
    assert not any(k.startswith("embed_") for k in again)
    assert [json.loads(x) for x in open(os.path.join(out, "labels.jsonl"))] == lab


def test_csls_labels_rank_by_the_hubness_corrected_score_and_spread_the_selections(labels, tmp_path):
    import shutil

    from data.embedding_store import read_embeddings
    from pseudo_labels import label

    cfg = json.load(open(os.path.join(labels[0], "pseudo_labels.json")))
    out = tmp_path / "csls"
    shutil.copytree(os.path.join(labels[0], "embeddings"), out / "embeddings")   # the same MuLan embeddings
    s = label.main(["--model_dir", cfg["model_dir"], "--bank", cfg["bank_dir"], "--corpus", cfg["corpus_dir"],
                    "--out", str(out), "--hubness", "csls", "--no_progress"])
    assert not any(k.startswith("embed_") for k in s)                            # reused, not recomputed
    assert json.load(open(out / "pseudo_labels.json"))["hubness"] == "csls"
    emb = str(out / "embeddings")
    cap_ids, cap, _ = read_embeddings(emb, "captions")
    clip_ids, clips, _ = read_embeddings(emb, "clips")
    counts = np.load(out / "counts.npz")
    r = counts["captions_hubness"]
    np.testing.assert_allclose(r, np.sort(cap @ clips.T, axis=1)[:, -10:].mean(1), atol=1e-5)
    score = clips @ cap.T - r[None, :] / 2
    got = {x["clip_id"]: x for x in map(json.loads, open(out / "labels.jsonl"))}
    for i, cid in enumerate(clip_ids):
        top = [cap_ids.index(c) for c, _ in got[cid]["top_k"]]
        kth = np.sort(score[i])[::-1][9]
        assert {j for j in top if score[i, j] > kth + 1e-5} == set(np.flatnonzero(score[i] > kth + 1e-5))
    plain = np.load(os.path.join(labels[0], "counts.npz"))["captions"]
    assert (counts["captions"] > 0).sum() >= (plain > 0).sum() and counts["captions"].max() <= plain.max()


def test_clip_draws_do_not_depend_on_the_batch(labels):
    from data.pseudo_label_index import PseudoLabeler

    lab = PseudoLabeler(labels[0])
    ids = list(lab.clip_row)
    whole = lab.label(ids)["caption_pick"]
    parts = np.concatenate([lab.label([c])["caption_pick"] for c in reversed(ids)])[::-1]
    np.testing.assert_array_equal(whole, parts)
    assert not np.array_equal(whole, lab.label(ids, seed=123)["caption_pick"])


def _n2m_iterator(corpus_dir, labels_dir, name="n2m_pseudo_labels", seed=3):
    from data import tasks
    from data.feature_converters import AudioTextFeatureConverter
    from data.preprocessors import PseudoLabelMatching
    from trainer.input_pipeline import SeqioData
    from trainer.partitioning import DataLayout

    name = tasks.corpus_task(name, corpus_dir=corpus_dir, pseudo_labels=PseudoLabelMatching(labels_dir, batch_size=4))
    src = SeqioData(name, task_feature_lengths={"audio": 160000, "text_tokens": 12},
                    feature_converter=AudioTextFeatureConverter)
    return src.make_iterator(DataLayout(4, 4, 0, 1), seed=seed)


def test_seqio_task_batches_draw_one_pseudo_label_option_per_clip(labels, tiny_corpus):
    import seqio

    out, _ = labels
    corpus_dir = tiny_corpus[0]
    it = _n2m_iterator(corpus_dir, out)
    b1 = next(it)
    assert b1["audio"].shape == (4, 160000) and b1["text_tokens"].shape == (4, 12)
    assert (b1["text_mask"].sum(1) > 2).all()
    state = it.get_state()  # the input position is checkpointable with inline matching in it
    b2 = next(it)
    it2 = _n2m_iterator(corpus_dir, out)
    it2.set_state(state)
    np.testing.assert_array_equal(next(it2)["text_tokens"], b2["text_tokens"])

    # Every text is one of the clip's options: its drawn captions, its drawn tags chunked to the
    # text length, or its metadata; over epochs several options are used.
    lab = {json.loads(x)["clip_id"]: json.loads(x) for x in open(os.path.join(out, "labels.jsonl"))}
    ds = seqio.get_mixture_or_task("n2m_pseudo_labels").get_dataset(
        {"audio": 160000, "text_tokens": 12}, split="train", shuffle=False, num_epochs=3, seed=5)
    meta = {r["clip_id"]: ", ".join(t for t, ok in zip(r["texts"]["short"], r["text_ok"]["short"]) if ok)
            for r in tiny_corpus[2]}
    seen = {}
    for ex in ds.as_numpy_iterator():
        cid, text = ex["clip_id"].decode(), ex["text"].decode()
        caps = {c["text"] for c in lab[cid]["captions"]}
        tag_words = {t["text"] for t in lab[cid]["tags"]}
        assert text in caps or set(text.split(", ")) <= tag_words or text == meta[cid], (cid, text)
        seen.setdefault(cid, set()).add(text)
    assert any(len(v) > 1 for v in seen.values())
    assert any(t in {c["text"] for c in lab[c]["captions"]} for c, v in seen.items() for t in v)
    assert any(set(t.split(", ")) <= {x["text"] for x in lab[c]["tags"]} for c, v in seen.items() for t in v)
    # The mixture with weak text has the same features.
    mix = next(_n2m_iterator(corpus_dir, out, "n2m_pseudo_labels_and_weak_text"))
    assert mix["audio"].shape == (4, 160000)


def test_missing_labels_dir_is_named(tiny_corpus, tmp_path):
    import tensorflow as tf

    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="pseudo_labels.json|PSEUDO_LABELS_DIR"):
        next(_n2m_iterator(tiny_corpus[0], str(tmp_path / "nowhere")))


def test_audit_writes_json_markdown_and_plots(labels, tmp_path):
    from pseudo_labels import audit

    out = tmp_path / "audit"
    s = audit.main(["--labels", labels[0], "--out", str(out)])
    full = json.load(open(out / "audit.json"))
    assert s["clips"] == full["clips"] and {"all", "train", "test"} <= set(full["splits"])
    inst = full["splits"]["all"]["instrument"]["captions"]
    for method in ("pseudo", "random"):
        r = inst[method]
        assert r["labels"] == 3 * full["clips"] and 0 < r["mentions"] <= r["labels"]
        assert 0 <= r["agreement"] <= 1 and 0 <= r["asymmetry"] <= 1 and 0 <= r["tvd"] <= 1
        assert abs(sum(r["true_share"].values()) - 1) < 1e-3
    md = (out / "audit.md").read_text()
    assert "| instrument |" in md and "random" in md
    assert (out / "agreement.png").stat().st_size > 1000 and (out / "instrument.png").exists()


def test_lexicon_reads_attribute_values_from_captions():
    from pseudo_labels.quality import Lexicon

    lex = Lexicon({"instrument": {"piano", "drums", "electric guitar", "violin"}, "tempo": {"slow", "upbeat", "fast"},
                   "mode": {"major", "minor"}})
    text = "A moderately fast tune in B minor: electric guitar (jazz), acoustic grand piano and a drum kit at 150 bpm."
    assert lex.mentions(text, "instrument") == {"electric guitar", "piano", "drums"}
    assert lex.mentions(text, "tempo") == {"upbeat", "fast"}  # "moderately fast" and 150 bpm
    assert lex.mentions(text, "mode") == {"minor"}
    assert lex.mentions("Violins play slowly.", "instrument") == {"violin"}
