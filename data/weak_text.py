"""Weakly associated text for a clip, from four sources kept apart, as MuLan used (docs/PAPERS.md §1).

* short-form: title, composer, tags (instruments, genre, tempo words, key, meter) and the junk web
  metadata carries beside them (catalogue ids, collection numbers, file-ish names);
* long-form: MMA's groove description and the style paragraph of its author, split into
  sentences; the header notes of ABC collections (tempo markings, transcriber credits, editorial
  remarks in German); a few sentences built from the work's metadata fields;
* playlist: names of the collections, books, style families and regions a clip belongs to;
* label: class-label text, as from a tagged set (the ground-truth tags' words).

Every text carries an `ok` mark from `data.text_filter` (rules for short-form and playlist, the
classifier for long-form); the tasks decide whether to use the marks. Ground-truth tags for
evaluation are in `tags`.
"""
from __future__ import annotations

import re

from data import text_filter

SOURCES = ("short", "long", "playlist", "label")


def tempo_word(bpm: float) -> str:
    if bpm < 76:
        return "slow"
    if bpm < 108:
        return "moderate tempo"
    if bpm < 140:
        return "upbeat"
    return "fast"


def split_sentences(text: str) -> list[str]:
    parts = re.split(r'(?<=[.!?])\s+(?=[A-Z"(`])', " ".join(str(text).split()))
    return [p.strip() for p in parts if len(p.strip()) > 3]


def _camel_words(name: str) -> str:
    return " ".join(re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", name)).lower()


def ground_truth_tags(m: dict) -> dict:
    """Tags by attribute, the truth the evaluation and the pseudo-label audit compare against."""
    inst = sorted({i["tag"] for i in m.get("instruments", [])})
    mode = m.get("key", "").split(" ")[-1] if m.get("key") else ""
    return {
        "instrument": inst,
        "genre": sorted(set(m.get("genre", []))),
        "style": [m["style_family"]] if m.get("style_family") else [m["collection"].replace("_", " ")],
        "tempo": [tempo_word(m["tempo_bpm"])] if m.get("tempo_bpm") else [],
        "mode": [mode] if mode in ("major", "minor") else [],
        "dance": [m["dance"]] if m.get("dance") else [],
        "ensemble": [m["ensemble"]] if m.get("ensemble") else [],
    }


def weak_texts(m: dict) -> dict[str, list[str]]:
    tags = ground_truth_tags(m)
    short, long, playlist = [], [], []
    if m.get("title"):
        short.append(m["title"])
    if m.get("composer"):
        short.append(m["composer"])
    short += tags["instrument"] + tags["genre"] + tags["dance"] + tags["ensemble"]
    if m.get("tempo_bpm"):
        short += [tempo_word(m["tempo_bpm"]), f"{int(m['tempo_bpm'])} bpm"]
    if m.get("key"):
        short.append(m["key"])
    if m.get("time_signature"):
        short.append(m["time_signature"])
    if m.get("groove"):
        short.append(_camel_words(m["groove"]))
    short += [c for c in m.get("catalogue", []) if c]
    if m.get("rhythm"):
        short += [r.strip() for r in m["rhythm"].split(",") if r.strip()]

    if m.get("groove_description"):
        long += split_sentences(m["groove_description"])
    if m.get("style_doc"):
        long += split_sentences(m["style_doc"])
    for n in m.get("notes", []):
        long += split_sentences(n.strip(' "'))
    if m.get("locale"):
        long.append(f"Origin: {m['locale']}.")
    if m.get("composer") and m.get("title"):
        long.append(f"{m['title']}, by {m['composer']}.")

    for p in (m.get("collection_title"), m.get("book"), m.get("style_name")):
        if p:
            playlist.append(p)
    if m.get("style_family"):
        playlist.append(f"{m['style_family']} grooves")
    if m.get("locale"):
        playlist.append(m["locale"].split(",")[-1].strip() + " folk songs")
    if m.get("composer"):
        playlist.append(f"Best of {m['composer']}")

    label = sorted(set(tags["instrument"] + tags["genre"] + tags["style"] + tags["dance"]))
    dedup = lambda xs: list(dict.fromkeys(x.strip() for x in xs if x and x.strip()))  # noqa: E731
    return {"short": dedup(short), "long": dedup(long), "playlist": dedup(playlist), "label": dedup(label)}


def mark_ok(texts: dict[str, list[str]]) -> dict[str, list[bool]]:
    """The text filter's verdicts, one per text."""
    clf = text_filter.default_long_form_filter()
    out = {}
    for src, xs in texts.items():
        if src == "long":
            out[src] = [bool(p >= 0.5) for p in clf.prob(xs)]
        elif src == "label":
            out[src] = [True] * len(xs)
        else:
            out[src] = [text_filter.short_form_ok(x) for x in xs]
    return out
