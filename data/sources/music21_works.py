"""Works from the music21 corpus (scores nobody in this project wrote), rendered as excerpts.

A *work* is one piece: a chorale, a quartet (all its movements), a madrigal, one tune of an ABC
collection. Works are listed cheaply (file names, ABC header fields) without parsing scores; a
clip parses its score, takes an excerpt of whole measures, and is converted note by note to a
`PrettyMIDI` at the clip's tempo, transposition and GM instrumentation (the scores mostly carry no
GM programs). Going straight from notes avoids music21's MIDI writer and its pitfalls (ticks per
quarter, repeat barlines, expressions).
"""
from __future__ import annotations

import glob
import os
import re

import numpy as np

# Ensembles for part-songs, listed high voice to low: (name, GM programs).
CHORAL_ENSEMBLES = [
    ("choir", [52, 52, 53, 52]),
    ("church organ", [19, 19, 19, 19]),
    ("string quartet", [40, 40, 41, 42]),
    ("brass quartet", [56, 56, 57, 58]),
    ("woodwind quartet", [73, 68, 71, 70]),
    ("piano", [0, 0, 0, 0]),
    ("harpsichord", [6, 6, 6, 6]),
    ("recorder consort", [74, 74, 74, 71]),
]
QUARTET_ENSEMBLES = [
    ("string quartet", [40, 40, 41, 42]),
    ("string quartet", [40, 40, 41, 42]),
    ("piano", [0, 0, 0, 0]),
    ("woodwind quartet", [73, 68, 71, 70]),
    ("brass quartet", [56, 60, 57, 58]),
]
# Solo instruments for single-line tunes (fiddle tunes, folk songs).
SOLO_INSTRUMENTS = [
    ("violin", [40]), ("flute", [73]), ("accordion", [21]), ("whistle", [78]),
    ("harmonica", [22]), ("banjo", [105]), ("piano", [0]), ("acoustic guitar", [24]),
    ("bagpipe", [109]), ("clarinet", [71]), ("oboe", [68]), ("recorder", [74]),
    ("trumpet", [56]), ("marimba", [12]), ("vibraphone", [11]), ("harpsichord", [6]),
]

# Collections: glob patterns under the music21 corpus, how to list works, ensembles, tempo range,
# and the genre words a listener would use (ground truth for tagging).
COLLECTIONS = {
    "bach_chorales": dict(
        title="Bach Chorales", files=["bach/bwv*.mxl"], ensembles=CHORAL_ENSEMBLES,
        tempo=(60, 100), genre=["baroque", "classical", "chorale", "hymn"]),
    "renaissance_polyphony": dict(
        title="Renaissance polyphony", files=["palestrina/*.krn", "monteverdi/madrigal.*.mxl",
                                              "josquin/*.mxl"],
        ensembles=CHORAL_ENSEMBLES, tempo=(60, 96), genre=["renaissance", "classical", "choral"]),
    "string_quartets": dict(
        title="String quartets", files=["haydn/*/*.mxl", "mozart/*/*.mxl", "beethoven/opus*/*.mxl",
                                        "beethoven/opus*.mxl"],
        ensembles=QUARTET_ENSEMBLES, tempo=(70, 140), genre=["classical", "chamber music"]),
    "fiddle_tunes": dict(
        title="Fiddle tunes", files=["ryansMammoth/*.abc", "oneills1850/*.abc"],
        ensembles=SOLO_INSTRUMENTS, tempo=(90, 140), genre=["folk", "celtic", "fiddle tune"]),
    "folk_songs": dict(
        title="Essen folk songs", files=["essenFolksong/*.abc"], ensembles=SOLO_INSTRUMENTS,
        tempo=(70, 130), genre=["folk", "folk song"]),
}
_SKIP_ABC = re.compile(r"(^|/)(test\w*|teste|testd)\.abc$")
DANCE_WORDS = ["reel", "jig", "hornpipe", "strathspey", "polka", "waltz", "march", "slide",
               "schottische", "clog", "fling", "quickstep", "mazurka", "set dance", "air", "slip jig"]


def corpus_root() -> str:
    import music21

    return os.path.join(os.path.dirname(music21.__file__), "corpus")


def _abc_tunes(path: str) -> list[dict]:
    """Header fields of each tune in an ABC file (X: number, T:, C:, O:, R:, N:, B:, M:, K:)."""
    tunes, cur = [], None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.match(r"^([A-Za-z]):\s*(.*?)\s*$", line)
            if not m:
                continue
            k, v = m.groups()
            if k == "X":
                cur = {"X": v, "fields": {}}
                tunes.append(cur)
            elif cur is not None and k in "TCORNBMKZS" and v:
                cur["fields"].setdefault(k, []).append(v)
    return [t for t in tunes if t["X"].strip().isdigit()]


def list_works(collections: list[str] | None = None) -> list[dict]:
    """Every work of the chosen collections, with header metadata; no score is parsed."""
    root = corpus_root()
    works = []
    for cname in collections or list(COLLECTIONS):
        spec = COLLECTIONS[cname]
        files = sorted({f for pat in spec["files"] for f in glob.glob(os.path.join(root, pat))})
        for f in files:
            rel = os.path.relpath(f, root)
            if f.endswith(".abc"):
                if _SKIP_ABC.search(rel):
                    continue
                for t in _abc_tunes(f):
                    flds = t["fields"]
                    works.append(dict(
                        work_id=f"music21:{rel}#{t['X']}", collection=cname, path=rel, number=int(t["X"]),
                        title=(flds.get("T") or [""])[0], composer=(flds.get("C") or [""])[0],
                        locale=(flds.get("O") or [""])[0], rhythm=(flds.get("R") or [""])[0],
                        book=(flds.get("B") or [""])[0], notes=flds.get("N", []) + flds.get("Z", []),
                        meter=(flds.get("M") or [""])[0]))
            else:
                # Quartet movements group into one work per opus; other files are works themselves.
                group = os.path.dirname(rel) if "/movement" in rel else os.path.splitext(rel)[0]
                works.append(dict(work_id=f"music21:{group}", collection=cname, path=rel, number=None,
                                  title="", composer=rel.split("/")[0], locale="", rhythm="",
                                  book="", notes=[], meter=""))
    return works


def _score(work: dict):
    import music21

    music21.defaults.ticksPerQuarter = 480
    path = os.path.join(corpus_root(), work["path"])
    if work["number"] is not None:
        s = music21.converter.parse(path, number=work["number"], format="abc")
    else:
        s = music21.converter.parse(path)
    if isinstance(s, music21.stream.Opus):
        s = s.scores[0]
    return s


def dance_of(title: str, rhythm: str) -> str:
    text = f"{title} {rhythm}".lower()
    for w in sorted(DANCE_WORDS, key=len, reverse=True):
        if re.search(rf"\b{w}s?\b", text):
            return w
    return ""


def render_midi(work: dict, rng: np.random.Generator, clip_seconds: float):
    """Parses the work and returns (PrettyMIDI, metadata) for one excerpt, randomised by `rng`."""
    import pretty_midi
    from music21 import chord, interval, note

    spec = COLLECTIONS[work["collection"]]
    s = _score(work)
    parts = [p.stripTies() for p in s.parts] or [s.stripTies()]
    parts = [p for p in parts if p.flatten().notes]
    if not parts:
        raise ValueError("score has no notes")
    md = s.metadata
    title = work["title"] or (md.title if md and md.title else "") or (md.movementName if md and md.movementName else "")
    composer = work["composer"] or (md.composer if md and md.composer else "")
    ens_name, programs = spec["ensembles"][int(rng.integers(len(spec["ensembles"])))]
    tempo = float(rng.integers(spec["tempo"][0], spec["tempo"][1] + 1))
    semitones = int(rng.integers(-5, 7))
    window_q = clip_seconds * tempo / 60.0
    total_q = float(s.highestTime)
    starts = [float(m.offset) for m in parts[0].getElementsByClass("Measure")] or [0.0]
    starts = [o for o in starts if o + window_q <= total_q] or [0.0]
    start_q = starts[int(rng.integers(min(len(starts), 8)))]  # one of the first 8 bars
    sec = 60.0 / tempo
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    n = len(parts)
    for i, part in enumerate(parts):
        prog = programs[min(int(round(i * (len(programs) - 1) / max(n - 1, 1))), len(programs) - 1)]
        inst = pretty_midi.Instrument(program=prog, name=part.partName or f"part{i}")
        for el in part.flatten().notes:
            off, ql = float(el.offset), float(el.quarterLength)
            if ql <= 0 or off < start_q or off >= start_q + window_q:
                continue
            pitches = el.pitches if isinstance(el, chord.Chord) else [el.pitch] if isinstance(el, note.Note) else []
            vel = el.volume.velocity if el.volume.velocity else int(rng.integers(70, 96))
            t0 = (off - start_q) * sec
            t1 = t0 + max(min(ql, start_q + window_q - off), 0.125) * sec * 0.95
            for p in pitches:
                midi = p.midi + semitones
                if 12 <= midi <= 115:
                    inst.notes.append(pretty_midi.Note(velocity=int(vel), pitch=int(midi), start=t0, end=t1))
        if inst.notes:
            pm.instruments.append(inst)
    if not pm.instruments:
        raise ValueError(f"no notes in the excerpt at quarter {start_q}")
    excerpt = s.flatten().notes
    try:
        k = s.analyze("key")
        key = k.transpose(interval.Interval(semitones)) if semitones else k
        key_name = f"{key.tonic.name.replace('-', 'b')} {key.mode}"
    except Exception:  # key analysis is best-effort metadata
        key_name = ""
    ts = s.flatten().getElementsByClass("TimeSignature")
    meta = dict(
        title=title.strip(), composer=composer.strip(), ensemble=ens_name, tempo_bpm=tempo,
        transpose=semitones, key=key_name, time_signature=ts[0].ratioString if ts else work["meter"],
        excerpt_start_quarter=start_q, genre=list(spec["genre"]), collection_title=spec["title"],
        dance=dance_of(work["title"], work["rhythm"]), num_notes=len(excerpt))
    return pm, meta
