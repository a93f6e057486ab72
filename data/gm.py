"""General MIDI programs -> instrument tags a listener would use ("violin", "choir", "drums").

The 128 GM names and 16 families come from `pretty_midi.constants` (third-party text); the tag
is the plain word a caption or a tag list would use, shared by neighbouring programs.
"""
from __future__ import annotations

# (first program, last program) -> tag. Programs not listed take their GM family's tag.
_RANGES = [
    ((0, 5), "piano"), ((6, 6), "harpsichord"), ((7, 7), "clavinet"),
    ((8, 8), "celesta"), ((9, 9), "glockenspiel"), ((10, 10), "music box"),
    ((11, 11), "vibraphone"), ((12, 12), "marimba"), ((13, 13), "xylophone"),
    ((14, 14), "bells"), ((15, 15), "dulcimer"),
    ((16, 18), "organ"), ((19, 20), "church organ"), ((21, 21), "accordion"),
    ((22, 22), "harmonica"), ((23, 23), "accordion"),
    ((24, 25), "acoustic guitar"), ((26, 28), "electric guitar"), ((29, 30), "distorted guitar"),
    ((31, 31), "electric guitar"),
    ((32, 32), "double bass"), ((33, 39), "bass guitar"),
    ((40, 40), "violin"), ((41, 41), "viola"), ((42, 42), "cello"), ((43, 43), "double bass"),
    ((44, 45), "strings"), ((46, 46), "harp"), ((47, 47), "timpani"),
    ((48, 51), "strings"), ((52, 54), "choir"), ((55, 55), "orchestra hit"),
    ((56, 56), "trumpet"), ((57, 57), "trombone"), ((58, 58), "tuba"), ((59, 59), "trumpet"),
    ((60, 60), "french horn"), ((61, 63), "brass"),
    ((64, 67), "saxophone"), ((68, 68), "oboe"), ((69, 69), "english horn"),
    ((70, 70), "bassoon"), ((71, 71), "clarinet"),
    ((72, 72), "piccolo"), ((73, 73), "flute"), ((74, 74), "recorder"), ((75, 75), "pan flute"),
    ((76, 77), "flute"), ((78, 78), "whistle"), ((79, 79), "ocarina"),
    ((80, 87), "synth lead"), ((88, 95), "synth pad"), ((96, 103), "synth effects"),
    ((104, 104), "sitar"), ((105, 105), "banjo"), ((106, 106), "shamisen"), ((107, 107), "koto"),
    ((108, 108), "kalimba"), ((109, 109), "bagpipe"), ((110, 110), "fiddle"), ((111, 111), "shanai"),
    ((112, 119), "percussion"), ((120, 127), "sound effects"),
]
_TAG = {}
for (lo, hi), tag in _RANGES:
    for p in range(lo, hi + 1):
        _TAG[p] = tag


def program_name(program: int) -> str:
    import pretty_midi

    return pretty_midi.program_to_instrument_name(int(program))


def program_family(program: int) -> str:
    import pretty_midi

    return pretty_midi.program_to_instrument_class(int(program))


def program_tag(program: int, is_drum: bool = False) -> str:
    return "drums" if is_drum else _TAG[int(program)]


def instruments_of(pm) -> list[dict]:
    """The instruments that sound in a PrettyMIDI, with GM name, family and tag, largest first."""
    out = {}
    for inst in pm.instruments:
        if not inst.notes:
            continue
        key = ("drums", True) if inst.is_drum else (int(inst.program), False)
        d = out.setdefault(key, {
            "program": -1 if inst.is_drum else int(inst.program),
            "is_drum": bool(inst.is_drum),
            "name": "Drum Kit" if inst.is_drum else program_name(inst.program),
            "family": "Drums" if inst.is_drum else program_family(inst.program),
            "tag": program_tag(inst.program, inst.is_drum),
            "notes": 0,
        })
        d["notes"] += len(inst.notes)
    return sorted(out.values(), key=lambda d: -d["notes"])
