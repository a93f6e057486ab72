"""The caption bank of pseudo-labelling (docs/PAPERS.md §3): many short descriptions written for a
list of songs, cleaned so that they fit *other* music too (what `python -m pseudo_labels.write_bank`
runs).

    stats = build(songs, out, writers, samples)         # songs: read_songs(F) or songs_from_corpus(DIR)
    captions, tags = read_bank(out)

    OUT/raw.jsonl        every writer's answers per song, appended as they come (the resume log)
    OUT/captions.jsonl   the bank: {"id", "text", "song_id", "writer"} per sentence
    OUT/tags.jsonl       the short-tag vocabulary: {"id", "text", "category"} (genre, instrument,
                         mood, tempo, dance, ensemble words)
    OUT/failures.jsonl   (song, writer) pairs that failed, with the reason
    OUT/stats.json       counts at each cleaning step, per writer, and the bank's statistics

Songs: `--songs` is JSON lines of {"id", "title", "artist" or "composer", optional "midi",
"audio", "metadata"}; `--corpus` takes one song per work of a built corpus (`--split`, default
train: the captions are written for those works and then assigned to every clip by MuLan).

Cleaning: each answer is split into sentences; song titles, artist and composer names (and
catalogue numbers) are removed (`pseudo_labels.cleaning.remove_names`); sentences the long-form text
filter of the data pipeline does not judge to be about the music are dropped; duplicates across
the whole bank are dropped (the first writer's song is kept as the source).

Resumable: a re-run skips every (song, writer) already in raw.jsonl (failures are retried) and
rebuilds the cleaned bank from the log, so a killed run loses at most the answers in flight.
The last stdout line is JSON.
"""
from __future__ import annotations

import collections
import json
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from data.manifest import read_rows
from pseudo_labels import cleaning as caption_text
from pseudo_labels import writers as caption_writers

MOOD_TAGS = ["happy", "sad", "calm", "energetic", "relaxing", "dark", "bright", "melancholic", "uplifting",
             "dramatic", "romantic", "peaceful", "aggressive", "playful", "mysterious", "epic", "nostalgic",
             "dreamy", "tense", "cheerful", "solemn", "festive"]
TEMPO_TAGS = ["slow", "moderate tempo", "upbeat", "fast", "very slow", "very fast", "mid-tempo"]
GENRE_TAGS = ["rock", "pop", "jazz", "blues", "classical", "folk", "country", "latin", "reggae", "funk", "soul",
              "electronic", "hip hop", "metal", "punk", "gospel", "swing", "ballad", "waltz", "march",
              "baroque", "world music", "ambient", "dance", "disco", "bossa nova", "tango", "polka"]


# ----------------------------------------------------------------------------------------------
# Songs
# ----------------------------------------------------------------------------------------------

def _clean_title(t: str) -> str:
    return " ".join(str(t or "").split()).strip("\"'“”‘’ ")


def songs_from_corpus(corpus_dir: str, split: str | None = "train") -> list[dict]:
    """One song per work of a built corpus (its first clip's MIDI and metadata)."""
    path = os.path.join(corpus_dir, "manifest.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"--corpus={corpus_dir}: no manifest.jsonl (build it with data.build_corpus)")
    songs: dict[str, dict] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if (split and r.get("split") != split) or r["work_id"] in songs:
                continue
            meta = {k: v for k, v in r.items() if k not in ("audio", "midi", "seed")}
            songs[r["work_id"]] = {
                "id": r["work_id"], "title": _clean_title(r.get("title")), "composer": r.get("composer", ""),
                "catalogue": list(r.get("catalogue") or []),
                "midi": os.path.join(corpus_dir, r["midi"]) if r.get("midi") else None,
                "metadata": meta,
            }
    if not songs:
        raise ValueError(f"--corpus={corpus_dir}: no works in split {split!r}")
    return list(songs.values())


def read_songs(path: str) -> list[dict]:
    """A songs file: JSON lines (`data.manifest.read_rows`), `midi` / `audio` relative to its folder."""
    songs, seen = [], set()
    base = os.path.dirname(os.path.abspath(path))
    for n, s in read_rows(path):
        if not (s.get("title") or s.get("midi") or s.get("metadata")):
            raise ValueError(f"{path} line {n}: a song needs a 'title' (with 'artist' or 'composer'), a 'midi' "
                             f"file or 'metadata'")
        s.setdefault("id", f"song{n:06d}")
        s["title"] = _clean_title(s.get("title"))
        if s["id"] in seen:
            raise ValueError(f"{path} line {n}: duplicate song id {s['id']!r}")
        seen.add(s["id"])
        for k in ("midi", "audio"):
            if s.get(k) and not os.path.isabs(s[k]):
                s[k] = os.path.join(base, s[k])
        songs.append(s)
    return songs


def names_of(song: dict) -> tuple[list[str], list[str]]:
    """(people, titles) to remove from this song's captions."""
    people = [song.get("artist") or "", song.get("composer") or ""]
    titles = [song.get("title") or "", *song.get("catalogue", [])]
    return [p for p in people if p], [t for t in titles if t]


# ----------------------------------------------------------------------------------------------
# Writing (resumable)
# ----------------------------------------------------------------------------------------------

def read_log(path: str) -> tuple[dict, int]:
    """raw.jsonl -> ({(song_id, writer): answers}, number of unreadable lines (a killed write))."""
    done, bad = {}, 0
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    r = json.loads(line)
                    done[(r["song_id"], r["writer"])] = r["answers"]
                except (json.JSONDecodeError, KeyError):
                    bad += 1
    return done, bad


def write_answers(songs: list[dict], writers: list, out: str, samples: dict[str, int], workers: int = 4,
                  progress: bool = True) -> dict:
    from tqdm import tqdm

    log_path = os.path.join(out, "raw.jsonl")
    done, bad = read_log(log_path)
    if bad:  # a partial last line from a killed run: rewrite the log without it
        with open(log_path + ".tmp", "w", encoding="utf-8") as f:
            for (sid, w), a in done.items():
                f.write(json.dumps({"song_id": sid, "writer": w, "answers": a}) + "\n")
        os.replace(log_path + ".tmp", log_path)
    jobs = [(s, w) for s in songs for w in writers if (s["id"], w.name) not in done]
    failures, lock = [], threading.Lock()
    with open(log_path, "a", encoding="utf-8") as log, \
            tqdm(total=len(jobs), desc="write captions", unit="song", file=sys.stderr, disable=not progress) as bar:
        def run(song, writer):
            try:
                answers = writer.write(song, samples[writer.name])
                rec = {"song_id": song["id"], "writer": writer.name, "answers": answers}
            except caption_writers.WriterError as e:
                rec = {"song_id": song["id"], "writer": writer.name, "error": str(e)}
            with lock:
                if "error" in rec:
                    failures.append(rec)
                else:
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    done[(song["id"], writer.name)] = rec["answers"]
                bar.update(1)

        with ThreadPoolExecutor(max(1, workers)) as pool:
            for f in as_completed([pool.submit(run, s, w) for s, w in jobs]):
                f.result()
    with open(os.path.join(out, "failures.jsonl"), "w", encoding="utf-8") as f:
        for r in failures:
            f.write(json.dumps(r) + "\n")
    return {"jobs_resumed": len(songs) * len(writers) - len(jobs), "jobs_run": len(jobs),
            "jobs_failed": len(failures), "log_lines_dropped": bad, "answers": done}


# ----------------------------------------------------------------------------------------------
# Cleaning into the bank
# ----------------------------------------------------------------------------------------------

def clean_bank(songs: list[dict], answers: dict, writer_order: list[str], filter_threshold: float = 0.5,
               use_filter: bool = True) -> tuple[list[dict], dict]:
    from data.text_filter import default_long_form_filter

    flt = default_long_form_filter() if use_filter else None
    by_id = {s["id"]: s for s in songs}
    stats = collections.defaultdict(lambda: collections.Counter())
    candidates = []  # (text, song_id, writer)
    for sid in by_id:
        people, titles = names_of(by_id[sid])
        for w in writer_order:
            for ans in answers.get((sid, w), []):
                stats[w]["answers"] += 1
                for sent in caption_text.split_sentences(ans):
                    stats[w]["sentences"] += 1
                    clean = caption_text.remove_names(sent, people, titles=titles)
                    if clean is not None and len(re.findall(r"[A-Za-z]{2,}", clean)) < 3:
                        clean = None  # "113 636", "Op. 12": not a description
                    if clean is None:
                        stats[w]["dropped_names"] += 1
                        continue
                    if clean != sent:
                        stats[w]["names_removed"] += 1
                    candidates.append((clean, sid, w))
    # De-duplicate first (the first writer's song is kept), then filter only the unique sentences.
    unique = caption_text.dedupe_items(candidates, key=lambda c: c[0])
    for w in writer_order:
        stats[w]["dropped_duplicate"] = 0
    for c in candidates:
        stats[c[2]]["dropped_duplicate"] += 1
    for c in unique:
        stats[c[2]]["dropped_duplicate"] -= 1
    keep = [True] * len(unique)
    if flt is not None and unique:
        for i, p in enumerate(flt.prob([c[0] for c in unique])):
            if p < filter_threshold:
                keep[i] = False
                stats[unique[i][2]]["dropped_filter"] += 1
    bank = []
    for c, k in zip(unique, keep):
        if k:
            stats[c[2]]["kept"] += 1
            bank.append({"id": f"cap{len(bank):07d}", "text": c[0], "song_id": c[1], "writer": c[2]})
    return bank, {w: dict(stats[w]) for w in writer_order}


def tag_vocabulary(songs: list[dict]) -> list[dict]:
    """Short aspect tags: GM instrument names and families, genre/mood/tempo words, and the
    genre, instrument, dance and ensemble tags of the songs' metadata."""
    import pretty_midi

    cats: dict[str, set] = collections.defaultdict(set)
    for name in pretty_midi.constants.INSTRUMENT_MAP:
        cats["instrument"].add(re.sub(r"\s+", " ", re.sub(r"[()]", " ", name.lower())).strip())
    for fam in pretty_midi.constants.INSTRUMENT_CLASSES:
        cats["instrument"].add(fam.lower())
    cats["genre"].update(GENRE_TAGS)
    cats["mood"].update(MOOD_TAGS)
    cats["tempo"].update(TEMPO_TAGS)
    for s in songs:
        tags = (s.get("metadata") or {}).get("tags") or {}
        for cat in ("instrument", "genre", "dance", "ensemble"):
            cats[cat].update(t for t in tags.get(cat, []) if t)
    seen, out = set(), []
    for cat in ("genre", "instrument", "mood", "tempo", "dance", "ensemble"):
        for t in sorted(cats[cat]):
            if t not in seen:
                seen.add(t)
                out.append({"id": f"tag{len(out):05d}", "text": t, "category": cat})
    return out


def _write_jsonl(path: str, rows: list[dict]):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)


def build(songs: list[dict], out: str, writers: list, samples: dict[str, int], workers: int = 4,
          use_filter: bool = True, progress: bool = True) -> dict:
    t0 = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    w = write_answers(songs, writers, out, samples, workers=workers, progress=progress)
    bank, per_writer = clean_bank(songs, w.pop("answers"), [x.name for x in writers], use_filter=use_filter)
    tags = tag_vocabulary(songs)
    _write_jsonl(os.path.join(out, "captions.jsonl"), bank)
    _write_jsonl(os.path.join(out, "tags.jsonl"), tags)
    words = [len(b["text"].split()) for b in bank]
    stats = {
        "out": os.path.abspath(out), "songs": len(songs), "writers": [x.name for x in writers], **w,
        "per_writer": per_writer, "captions": len(bank), "tags": len(tags),
        "tags_per_category": dict(collections.Counter(t["category"] for t in tags)),
        "songs_with_captions": len({b["song_id"] for b in bank}),
        "mean_words": round(sum(words) / max(1, len(words)), 2),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    for x in writers:
        if isinstance(x, caption_writers.LanguageModelWriter):
            stats["lm_requests"], stats["lm_retries"] = x.requests, x.retried
    with open(os.path.join(out, "stats.json"), "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=1)
    return stats


def read_bank(bank_dir: str) -> tuple[list[dict], list[dict]]:
    """(captions, tags) of a built bank."""
    out = []
    for name in ("captions.jsonl", "tags.jsonl"):
        path = os.path.join(bank_dir, name)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} is missing: build the bank with `python -m pseudo_labels.write_bank --out {bank_dir}`")
        with open(path, encoding="utf-8") as f:
            out.append([json.loads(line) for line in f if line.strip()])
    return out[0], out[1]
