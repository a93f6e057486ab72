r"""A corpus of real music rendered to audio, with ground-truth metadata and weak text: the plan,
the renderer and `build` (what `python -m data.build_corpus` runs).

    report = build("demo", out)            # or "tiny" (tests), "small", "full"

Sources: works of the music21 corpus (chorales, Renaissance polyphony, string quartets, fiddle
tunes, Essen folk songs) with randomised GM instrumentation, tempo and transposition, and MMA
grooves over chord charts, plus any MIDI folder (`--midi_dir`). Each clip is rendered with one of
the SoundFonts found (FluidR3_GM, MuseScore_General_Lite, TimGM6mb, or `--soundfont` files).

Output in --out: `audio/<clip>.wav` (16 kHz mono; `audio_24000/` etc. for other rates), `midi/<clip>.mid`,
`manifest.jsonl` (one row per clip: metadata, weak texts with filter marks, ground-truth tags,
split), `records/<split>-*.tfrecord` (what the seqio tasks read; `records_24000/` etc. at the other
rates, for super-resolution), `spiece.model` (a SentencePiece vocabulary trained on the corpus
text: the Noise2Music text stages' default tokens, data/vocab.py), `report.json` (counts, hours,
timings, every skipped work with its reason) and `corpus.json` (written last: the corpus is
complete). Deterministic for a seed; splits are by work (a hash of the work id), so a piece is
never in both train and test, whatever the preset. An interrupted build resumes: finished clips
are kept.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import time

import numpy as np

from data import weak_text

PRESETS = {
    # a few works of each kind, for tests and smoke runs (about 20 s on 2 cores).
    "tiny": dict(music21={"bach_chorales": 3, "renaissance_polyphony": 0, "string_quartets": 0,
                          "fiddle_tunes": 3, "folk_songs": 3},
                 grooves=9, clips_per_groove=1, clips_per_work=1, clip_seconds=11.0),
    # works per music21 collection (None = all), grooves (None = all), clips per work, clip length.
    "demo": dict(music21={"bach_chorales": 60, "renaissance_polyphony": 25, "string_quartets": 0,
                          "fiddle_tunes": 60, "folk_songs": 50},
                 grooves=320, clips_per_groove=1, clips_per_work=1, clip_seconds=15.0),
    "small": dict(music21={"bach_chorales": 300, "renaissance_polyphony": 200, "string_quartets": 12,
                           "fiddle_tunes": 600, "folk_songs": 600},
                  grooves=None, clips_per_groove=2, clips_per_work=1, clip_seconds=20.0),
    "full": dict(music21={c: None for c in ("bach_chorales", "renaissance_polyphony", "string_quartets",
                                            "fiddle_tunes", "folk_songs")},
                 grooves=None, clips_per_groove=8, clips_per_work=1, clip_seconds=30.0),
}
COMPOSERS = {
    "bach": "Johann Sebastian Bach", "palestrina": "Giovanni Pierluigi da Palestrina",
    "monteverdi": "Claudio Monteverdi", "josquin": "Josquin des Prez", "haydn": "Joseph Haydn",
    "mozart": "Wolfgang Amadeus Mozart", "beethoven": "Ludwig van Beethoven",
}
log = logging.getLogger("build_corpus")


def stable_int(*parts) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


def split_of(work_id: str, test_fraction: float) -> str:
    """Split by work, independent of preset and seed: a work keeps its split in every corpus."""
    return "test" if (stable_int("split", work_id) % 10_000) < test_fraction * 10_000 else "train"


def plan(preset: str, seed: int, soundfonts: list[str], midi_dirs: list[str], test_fraction: float) -> list[dict]:
    """The deterministic list of clips to render (no audio work)."""
    from data.sources import mma_grooves, music21_works

    p = PRESETS[preset]
    specs = []

    def pick(items, n, salt):
        order = sorted(items, key=lambda w: stable_int(seed, salt, w["work_id"]))
        return order if n is None else order[:n]

    works = music21_works.list_works()
    for cname, n in p["music21"].items():
        for w in pick([w for w in works if w["collection"] == cname], n, cname):
            for k in range(p["clips_per_work"]):
                specs.append(dict(source="music21", work=w, variant=k))
    grooves = mma_grooves.list_grooves()
    for g in pick(grooves, p["grooves"], "mma"):
        for k in range(p["clips_per_groove"]):
            specs.append(dict(source="mma", work=g, variant=k))
    for d in midi_dirs:
        for root, _, files in os.walk(d):
            for f in sorted(files):
                if f.lower().endswith((".mid", ".midi")):
                    path = os.path.join(root, f)
                    w = dict(work_id=f"midi:{os.path.relpath(path, d)}", path=path, title=os.path.splitext(f)[0])
                    specs.append(dict(source="midi", work=w, variant=0))
    for s in specs:
        wid, k = s["work"]["work_id"], s["variant"]
        # The movements of a quartet share their work's id (one split per work) but are clips of
        # their own: their file names enter the clip's seed and id.
        path = s["work"].get("path") or ""
        ident = f"{wid}:{os.path.basename(path)}" if "/movement" in path else wid
        s["clip_seed"] = stable_int(seed, ident, k)
        s["clip_id"] = f"{s['source']}-{hashlib.sha1(f'{ident}#{k}'.encode()).hexdigest()[:12]}"
        s["soundfont"] = soundfonts[s["clip_seed"] % len(soundfonts)]
        s["split"] = split_of(wid, test_fraction)
        s["clip_seconds"] = p["clip_seconds"]
    seen: dict[str, str] = {}
    for s in specs:
        other = seen.setdefault(s["clip_id"], s["work"].get("path") or s["work"]["work_id"])
        if other != (s["work"].get("path") or s["work"]["work_id"]):
            raise ValueError(f"build_corpus: two sources map to clip id {s['clip_id']}: {other} and "
                             f"{s['work'].get('path') or s['work']['work_id']}")
    return specs


# ---------------------------------------------------------------------------- worker side
_W: dict = {}


def _init_worker(soundfonts: dict, sample_rates: list[int], out: str):
    from data.synth import Renderer

    logging.getLogger("music21").setLevel(logging.ERROR)
    _W["renderers"] = {sr: Renderer(soundfonts, sample_rate=sr) for sr in sample_rates}
    _W["out"] = out
    _W["soundfonts"] = soundfonts


def _midi_file_clip(work: dict, rng, clip_seconds: float):
    import pretty_midi

    try:
        pm = pretty_midi.PrettyMIDI(work["path"])
    except Exception as e:
        raise ValueError(f"cannot read MIDI file {work['path']}: {type(e).__name__}: {e}") from None
    if not any(i.notes for i in pm.instruments):
        raise ValueError(f"MIDI file {work['path']} has no notes")
    tempi = pm.get_tempo_changes()[1]
    ts = pm.time_signature_changes
    ks = pm.key_signature_changes
    key = ""
    if ks:
        name = pretty_midi.key_number_to_key_name(ks[0].key_number)
        key = name.replace("M", "major").replace("m", "minor") if " " in name else name
    return pm, dict(title=work["title"], tempo_bpm=float(tempi[0]) if len(tempi) else 120.0,
                    key=key, time_signature=f"{ts[0].numerator}/{ts[0].denominator}" if ts else "",
                    genre=[], collection_title=os.path.basename(os.path.dirname(work["path"])))


def render_clip(spec: dict) -> dict:
    """Renders one clip; returns its manifest row, or {'error': ...} (never raises)."""
    from data import audio, gm
    from data.sources import mma_grooves, music21_works

    t0 = time.time()
    w, out = spec["work"], _W["out"]
    rng = np.random.default_rng(spec["clip_seed"])
    try:
        if spec["source"] == "music21":
            pm, meta = music21_works.render_midi(w, rng, spec["clip_seconds"])
            comp = COMPOSERS.get(meta["composer"].lower(), meta["composer"])
            title = meta["title"]
            catalogue = []
            if title.lower().endswith((".mxl", ".krn")) or not title:
                stem = os.path.splitext(os.path.basename(w["path"]))[0]
                title = ""
                catalogue.append(stem.upper().replace("BWV", "BWV ") if stem.startswith("bwv") else stem)
            if w.get("number") is not None:
                catalogue.append(f"{os.path.splitext(os.path.basename(w['path']))[0]} #{w['number']}")
            meta.update(title=title, composer=comp, catalogue=catalogue, locale=w.get("locale", ""),
                        rhythm=w.get("rhythm", ""), book=w.get("book", ""), notes=w.get("notes", []),
                        collection=w["collection"])
        elif spec["source"] == "mma":
            pm, meta = mma_grooves.render_midi(w, rng, spec["clip_seconds"])
            meta.update(groove=w["groove"], groove_description=w["description"], style=w["style"],
                        style_doc=w["style_doc"], style_family=w["family"], genre=w["genre"],
                        style_name=f"{w['style']} style", collection="mma", title="", composer="")
        else:
            pm, meta = _midi_file_clip(w, rng, spec["clip_seconds"])
            meta.update(collection="midi")
        instruments = gm.instruments_of(pm)
        rel = {}
        duration = None
        for sr, renderer in _W["renderers"].items():
            x = renderer.render(pm, spec["soundfont"], tail_seconds=1.0, max_seconds=spec["clip_seconds"])
            x = x[: int((spec["clip_seconds"] + 1.0) * sr)]
            sub = "audio" if sr == 16000 else f"audio_{sr}"
            os.makedirs(os.path.join(out, sub), exist_ok=True)
            rel[sr] = f"{sub}/{spec['clip_id']}.wav"
            audio.write_wav(os.path.join(out, rel[sr]), x, sr)
            duration = len(x) / sr
        os.makedirs(os.path.join(out, "midi"), exist_ok=True)
        pm.write(os.path.join(out, "midi", f"{spec['clip_id']}.mid"))
    except Exception as e:  # one bad work must not end the build
        return dict(clip_id=spec["clip_id"], work_id=w["work_id"], error=f"{type(e).__name__}: {e}"[:500])
    row = dict(clip_id=spec["clip_id"], work_id=w["work_id"], split=spec["split"], source=spec["source"],
               soundfont=spec["soundfont"], seed=spec["clip_seed"], duration_s=round(duration, 3),
               audio={str(sr): p for sr, p in rel.items()}, midi=f"midi/{spec['clip_id']}.mid",
               instruments=[{k: v for k, v in i.items() if k != "notes"} for i in instruments], **meta)
    row["tags"] = weak_text.ground_truth_tags(row)
    row["texts"] = weak_text.weak_texts(row)
    row["text_ok"] = weak_text.mark_ok(row["texts"])
    row["render_s"] = round(time.time() - t0, 3)
    return row


# ---------------------------------------------------------------------------- driver
def check_disk_space(out: str, clip_seconds: float, to_render: int, total: int, sample_rates,
                     write_records: bool) -> None:
    """Fails before any work when the output disk clearly cannot hold the corpus (a full disk mid-way
    loses nothing, as the build resumes, but wastes the hours before it).  The estimate is an upper
    bound (every clip at full length plus a 1 s render tail, PCM16 wav per rate, one copy per rate in
    the records); below 75% of it is an error, below 100% a warning."""
    per_second = 2 * sum(sample_rates)
    need = to_render * (clip_seconds + 1) * per_second
    if write_records:
        rec_dir = os.path.join(out, "records")
        have = sum(os.path.getsize(os.path.join(rec_dir, f)) for f in os.listdir(rec_dir)) if os.path.isdir(rec_dir) else 0
        need += max(0.0, total * (clip_seconds + 1) * per_second - have)
    free = shutil.disk_usage(out).free
    msg = (f"{out}: this build needs up to {need / 1e9:.1f} GB ({to_render} clips to render"
           f"{' + TFRecords' if write_records else ''}), and {free / 1e9:.1f} GB is free")
    if free < 0.75 * need:
        raise SystemExit(f"{msg}. Free some space, choose another --out, or build fewer clips (--max_clips).")
    if free < need:
        print(f"[build_corpus] warning: {msg}; it may not fit.", flush=True)


def build(preset: str, out: str, *, seed: int = 0, sample_rates=(16000,), midi_dirs=(), soundfont_files=(),
          soundfont_names=None, workers: int | None = None, test_fraction: float = 0.1, max_clips: int | None = None,
          write_records: bool = True, progress: bool = True, records_per_shard: int = 32) -> dict:
    from data import records
    from data.synth import find_soundfonts

    t_start = time.time()
    out = os.path.abspath(os.path.expanduser(out))
    os.makedirs(out, exist_ok=True)
    sfs = find_soundfonts(list(soundfont_files))
    if soundfont_names:
        missing = [n for n in soundfont_names if n not in sfs]
        if missing:
            raise SystemExit(f"--soundfonts: {missing} not found; have {sorted(sfs)}")
        sfs = {n: sfs[n] for n in soundfont_names}
    if not sfs:
        raise SystemExit("no SoundFont found (pretty_midi's TimGM6mb.sf2 should always be there)")
    specs = plan(preset, seed, sorted(sfs), list(midi_dirs), test_fraction)
    if max_clips:
        specs = specs[:max_clips]
    partial = os.path.join(out, "rows.partial.jsonl")
    done = {}
    if os.path.exists(partial):
        with open(partial) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                done[r["clip_id"]] = r
        log.info("resuming: %d of %d clips already rendered", len(done), len(specs))
    todo = [s for s in specs if s["clip_id"] not in done]
    check_disk_space(out, PRESETS[preset]["clip_seconds"], len(todo), len(specs), sample_rates, write_records)
    workers = workers or min(os.cpu_count() or 1, 8)
    print(f"[build_corpus] preset={preset} seed={seed}: {len(specs)} clips ({len(todo)} to render) "
          f"with {len(sfs)} soundfonts {sorted(sfs)}, {workers} workers -> {out}", flush=True)
    from tqdm import tqdm

    ctx = mp.get_context("spawn")
    with open(partial, "a") as fpart, ctx.Pool(workers, _init_worker, (sfs, list(sample_rates), out)) as pool:
        bar = tqdm(total=len(todo), desc="rendering", unit="clip", disable=not progress, file=sys.stdout)
        for row in pool.imap_unordered(render_clip, todo, chunksize=4):
            done[row["clip_id"]] = row
            fpart.write(json.dumps(row) + "\n")
            fpart.flush()
            bar.update(1)
        bar.close()
    rows = [done[s["clip_id"]] for s in specs]
    ok = [r for r in rows if "error" not in r]
    failed = [r for r in rows if "error" in r]
    tmp = os.path.join(out, "manifest.jsonl.tmp")
    with open(tmp, "w") as f:
        for r in ok:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, os.path.join(out, "manifest.jsonl"))
    rec = {}
    for sr in (sample_rates if write_records else ()):   # records/ (16 kHz) and records_<rate>/ for the others
        info = records.write_corpus_records(out, ok, sample_rate=sr, progress=progress, per_shard=records_per_shard)
        rec.update(info) if sr == 16000 else rec.update({str(sr): info})
    from data import vocab   # TensorFlow and SentencePiece: imported when a corpus is written

    vocab.train_sentencepiece(out, os.path.join(out, vocab.SPIECE))
    long_total = sum(len(r["text_ok"]["long"]) for r in ok)
    long_kept = sum(sum(r["text_ok"]["long"]) for r in ok)
    report = dict(
        preset=preset, seed=seed, out=out, clips=len(ok), failed=len(failed),
        works=len({r["work_id"] for r in ok}),
        hours=round(sum(r["duration_s"] for r in ok) / 3600, 3),
        splits={s: sum(r["split"] == s for r in ok) for s in ("train", "test")},
        sources={s: sum(r["source"] == s for r in ok) for s in ("music21", "mma", "midi")},
        soundfonts={n: sum(r["soundfont"] == n for r in ok) for n in sfs},
        long_form_texts=long_total, long_form_kept_share=round(long_kept / max(long_total, 1), 4),
        build_seconds=round(time.time() - t_start, 1), sample_rates=list(sample_rates), records=rec,
        skipped=[dict(work_id=r["work_id"], clip_id=r["clip_id"], reason=r["error"]) for r in failed])
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    info = {k: report[k] for k in ("preset", "seed", "clips", "hours", "splits", "sample_rates")}
    with open(os.path.join(out, "corpus.json"), "w") as f:
        json.dump(info, f, indent=1)
    os.remove(partial)
    return report
