"""MMA (Musical MIDI Accompaniment) grooves, rendered over chord charts.

MMA's library holds ~1,100 named grooves in ~120 style files, written by MMA's authors, each groove
with a one-line description and each style file with a paragraph about the style. These are real
(text, music) pairs: the descriptions become long-form text, the style families playlist names.

A *work* here is a groove: all clips of one groove (over different charts, keys, tempos and
SoundFonts) land in the same split, so a held-out groove is never heard in training. The chord
charts are generic progressions (I-vi-ii-V, twelve-bar blues...), not compositions.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

MMA_LIB_DIRS = ["/usr/share/mma/lib/stdlib", "/usr/local/share/mma/lib/stdlib"]
# Files that are not music styles.
# Intros, endings and fills are one- to four-bar fragments, not grooves to loop.
_FRAGMENT = re.compile(r"(Intro|End|Ending|Fill)\d*$", re.I)
_NOT_STYLES = {"metronome", "metronome3", "metronome6", "metronome68", "none", "stdpats"}

# Style file name -> (family, genre words, tempo range). First matching pattern wins.
STYLE_FAMILIES = [
    (r"waltz", "waltz", ["waltz"], (90, 160)),
    (r"march", "march", ["march"], (100, 130)),
    (r"polka", "polka", ["polka", "folk"], (100, 140)),
    (r"bossa|samba|rhumba|mambo|chacha|salsa|son$|merengue|afro-cuban|cubanguitar|beguine|bolero"
     r"|calypso|tango|lfusion|latin", "latin", ["latin"], (80, 140)),
    (r"bluegrass|country|hillcountry|western|zydeco", "country", ["country"], (90, 150)),
    (r"blues|boggie|boogie", "blues", ["blues"], (70, 130)),
    (r"swing|jazz|bebop|bigband|dixie|evans|charleston|jive|ragtime|strut|softshoe|foxtrot"
     r"|quickstep|showtune|broadway", "jazz", ["jazz", "swing"], (90, 180)),
    (r"rock|8beat|twist|trance|boneym", "rock", ["rock", "pop"], (90, 150)),
    (r"funk|soul|rb|ska", "soul and funk", ["funk", "soul", "r&b"], (80, 125)),
    (r"ballad|lullaby|arpeggio", "ballad", ["ballad", "pop"], (60, 90)),
    (r"folk|desert", "folk", ["folk"], (80, 130)),
    (r"hymn|spiritual|gospel", "gospel", ["gospel", "hymn"], (60, 100)),
]

# Chord progressions in Roman numerals (per bar), major and minor.
PROGRESSIONS = {
    "major": [["I", "vi", "ii7", "V7"], ["I", "IV", "V7", "I"], ["ii7", "V7", "Imaj7", "Imaj7"],
              ["I", "V", "vi", "IV"], ["I", "I", "IV", "IV", "I", "I", "V7", "V7"],
              ["I7", "I7", "I7", "I7", "IV7", "IV7", "I7", "I7", "V7", "IV7", "I7", "V7"]],
    "minor": [["i", "iv", "V7", "i"], ["i", "VI", "III", "VII"], ["iim7b5", "V7", "i", "i"],
              ["i", "i", "iv", "iv", "i", "i", "V7", "V7"]],
}
_SEMI = {"I": 0, "II": 2, "III": 4, "IV": 5, "V": 7, "VI": 9, "VII": 11}
_MINOR_SEMI = {"III": 3, "VI": 8, "VII": 10}
_NAMES = ["C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B"]
_MINOR_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B"]


class MMAError(RuntimeError):
    pass


def mma_binary() -> str:
    exe = shutil.which("mma")
    if not exe:
        raise MMAError("MMA is not installed: `apt-get install mma` (done by `bash run.sh setup`).")
    return exe


def library_dir() -> str:
    for d in MMA_LIB_DIRS:
        if os.path.isdir(d):
            return d
    raise MMAError(f"MMA's groove library was not found in {MMA_LIB_DIRS} (`apt-get install mma`).")


def style_family(style: str):
    for pat, fam, genre, tempo in STYLE_FAMILIES:
        if re.search(pat, style):
            return fam, list(genre), tempo
    return "other", [], (80, 130)


def _doc(text: str) -> str:
    m = re.search(r"^\s*Begin\s+Doc\s*$(.*?)^\s*End\s*$", text, re.M | re.S | re.I)
    return " ".join(m.group(1).split()) if m else ""


def list_grooves(lib: str | None = None) -> list[dict]:
    """Every `DefGroove` in the library with its description, style file, doc paragraph, meter."""
    lib = lib or library_dir()
    out, seen = [], set()
    for path in sorted(glob.glob(os.path.join(lib, "*.mma"))):
        style = os.path.splitext(os.path.basename(path))[0]
        if style in _NOT_STYLES:
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        text = re.sub(r"\\\s*\n\s*", " ", text)  # line continuations
        doc = _doc(text)
        tm = re.search(r"^\s*Time\s+(\d+)", text, re.M | re.I)
        ts = re.search(r"^\s*TimeSig\s+(\d+)\s+(\d+)", text, re.M | re.I)
        fam, genre, tempo = style_family(style)
        for m in re.finditer(r"^\s*DefGroove\s+(\S+)\s*(.*)$", text, re.M | re.I):
            if _FRAGMENT.search(m.group(1)) or m.group(1).lower() in seen:
                continue
            seen.add(m.group(1).lower())
            out.append(dict(
                work_id=f"mma:{m.group(1).lower()}", groove=m.group(1), description=m.group(2).strip(),
                style=style, style_doc=doc, family=fam, genre=genre, tempo_range=tempo,
                beats=int(tm.group(1)) if tm else 4,
                time_signature=f"{ts.group(1)}/{ts.group(2)}" if ts else f"{tm.group(1) if tm else 4}/4"))
    return out


def _chord(numeral: str, tonic: int, mode: str) -> str:
    m = re.match(r"^(b?)([ivIV]+)(.*)$", numeral)
    flat, roman, quality = m.groups()
    semis = (_MINOR_SEMI if mode == "minor" else {}).get(roman.upper(), _SEMI[roman.upper()])
    root = (_MINOR_NAMES if mode == "minor" else _NAMES)[(tonic + semis - (1 if flat else 0)) % 12]
    minor = roman.islower()
    if quality == "m7b5":
        return root + "m7b5"
    return root + ("m" if minor else "") + ("" if quality in ("",) else quality)


def chart(rng: np.random.Generator, bars: int, mode: str | None = None):
    mode = mode or ("major" if rng.random() < 0.7 else "minor")
    tonic = int(rng.integers(12))
    prog = PROGRESSIONS[mode][int(rng.integers(len(PROGRESSIONS[mode])))]
    chords = [_chord(prog[i % len(prog)], tonic, mode) for i in range(bars)]
    key = f"{(_MINOR_NAMES if mode == 'minor' else _NAMES)[tonic]} {mode}"
    return chords, key, key


def render_midi(groove: dict, rng: np.random.Generator, clip_seconds: float, *, timeout: float = 30.0):
    """Writes an MMA song for the groove, runs `mma`, returns (PrettyMIDI, metadata)."""
    import pretty_midi

    lo, hi = groove["tempo_range"]
    tempo = int(rng.integers(lo, hi + 1))
    bars = max(2, int(np.ceil(clip_seconds * tempo / 60.0 / groove["beats"])))
    chords, key, keysig = chart(rng, bars)
    song = [f"Tempo {tempo}", f"Groove {groove['groove']}", f"KeySig {keysig}"]
    song += [f"{i + 1} {c}" for i, c in enumerate(chords)]
    with tempfile.TemporaryDirectory(prefix="n2m-mma-") as d:
        src, mid = os.path.join(d, "song.mma"), os.path.join(d, "song.mid")
        with open(src, "w") as f:
            f.write("\n".join(song) + "\n")
        try:
            p = subprocess.run([mma_binary(), "-f", mid, src], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise MMAError(f"mma timed out after {timeout}s") from None
        if p.returncode != 0 or not os.path.exists(mid):
            err = " ".join((p.stdout + p.stderr).split())[-300:]
            raise MMAError(f"mma failed (exit {p.returncode}): {err}")
        pm = pretty_midi.PrettyMIDI(mid)
    meta = dict(tempo_bpm=float(tempo), key=key, time_signature=groove["time_signature"],
                chords=chords, bars=bars)
    return pm, meta
