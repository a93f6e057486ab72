"""MIDI -> audio with FluidSynth and General MIDI SoundFonts.

One `Renderer` per process keeps one synthesizer and every SoundFont loaded once (a load costs
0.05-1.5 s and would otherwise dominate), and renders a `pretty_midi.PrettyMIDI` by stepping the
synth between its events. Pitfalls handled here: the `sfid` returned by `sfload` must be passed to
`program_select` (otherwise silence); the gain stays at 0.4 (above ~0.5 clips); the release tail is
cut to `tail_seconds`; the result is peak-normalised.
"""
from __future__ import annotations

import glob
import os

import numpy as np

# SoundFonts the corpus builder can use, by short name. TimGM6mb ships inside the pretty_midi
# wheel; the others come from Debian (`fluid-soundfont-gm`, `musescore-general-soundfont-small`).
SOUNDFONT_CANDIDATES = {
    "TimGM6mb": ["{pretty_midi}/TimGM6mb.sf2"],
    "FluidR3_GM": ["/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/soundfonts/FluidR3_GM.sf2"],
    "MuseScore_General_Lite": ["/usr/share/sounds/sf3/MuseScore_General_Lite.sf3"],
}


class SynthError(RuntimeError):
    pass


def find_soundfonts(extra: list[str] | None = None) -> dict[str, str]:
    """Name -> path of the SoundFonts found on this machine, plus user-supplied files or folders."""
    import pretty_midi

    found = {}
    pm_dir = os.path.dirname(pretty_midi.__file__)
    for name, paths in SOUNDFONT_CANDIDATES.items():
        for p in paths:
            p = p.format(pretty_midi=pm_dir)
            if os.path.exists(p):
                found[name] = os.path.realpath(p)
                break
    for item in extra or []:
        files = sorted(glob.glob(os.path.join(item, "*.sf[23]"))) if os.path.isdir(item) else [item]
        for f in files:
            if not os.path.exists(f):
                raise SynthError(f"--soundfont {f}: file does not exist")
            found[os.path.splitext(os.path.basename(f))[0]] = os.path.realpath(f)
    return found


def _import_fluidsynth():
    try:
        import fluidsynth  # pyfluidsynth; needs the libfluidsynth shared library.

        fluidsynth.Synth  # noqa: B018 (the import succeeds even without the library on some versions)
        return fluidsynth
    except (ImportError, OSError, AttributeError) as e:
        raise SynthError(
            "FluidSynth is not available: install the library (`apt-get install libfluidsynth3`, "
            "done by `bash run.sh setup`) and `pip install pyfluidsynth`. "
            f"({type(e).__name__}: {e})"
        ) from None


class Renderer:
    """Renders MIDI with a persistent FluidSynth instance; `soundfonts` maps name -> path."""

    def __init__(self, soundfonts: dict[str, str], sample_rate: int = 16000, gain: float = 0.4):
        fluidsynth = _import_fluidsynth()
        self.sample_rate = int(sample_rate)
        self.synth = fluidsynth.Synth(samplerate=float(sample_rate), gain=gain)
        # Chorus/reverb on: the default GM sound a listener expects.
        self._paths = dict(soundfonts)
        self._sfids: dict[str, int] = {}

    def _sfid(self, name: str) -> int:
        if name not in self._sfids:
            if name not in self._paths:
                raise SynthError(f"unknown soundfont {name!r}; have {sorted(self._paths)}")
            sfid = self.synth.sfload(self._paths[name])
            if sfid < 0:
                raise SynthError(f"FluidSynth could not load soundfont {self._paths[name]}")
            self._sfids[name] = sfid
        return self._sfids[name]

    def render(self, pm, soundfont: str, *, tail_seconds: float = 1.0, max_seconds: float | None = None) -> np.ndarray:
        """Renders `pm` (a PrettyMIDI) to float32 mono, peak-normalised to 0.9."""
        sfid = self._sfid(soundfont)
        s = self.synth
        s.system_reset()
        events = []  # (time, order, kind, channel, a, b)
        melodic = [ch for ch in range(16) if ch != 9]
        for k, inst in enumerate(pm.instruments):
            if inst.is_drum:
                ch = 9
            else:
                if k >= len(melodic):
                    raise SynthError(f"more than 15 melodic instruments ({len(pm.instruments)})")
                ch = melodic[k]
            s.program_select(ch, sfid, 128 if inst.is_drum else 0, 0 if inst.is_drum else int(inst.program))
            for cc in inst.control_changes:
                events.append((cc.time, 1, "cc", ch, cc.number, cc.value))
            for pb in inst.pitch_bends:
                events.append((pb.time, 1, "pb", ch, pb.pitch, 0))
            for n in inst.notes:
                events.append((n.start, 2, "on", ch, n.pitch, n.velocity))
                events.append((n.end, 0, "off", ch, n.pitch, 0))
        if not events:
            raise SynthError("MIDI has no notes")
        events.sort(key=lambda e: (e[0], e[1]))
        end = max(e[0] for e in events)
        if max_seconds is not None:
            end = min(end, max_seconds)
        chunks, t_samples = [], 0
        for t, _, kind, ch, a, b in events:
            if t > end:
                break
            target = int(round(t * self.sample_rate))
            if target > t_samples:
                chunks.append(s.get_samples(target - t_samples))
                t_samples = target
            if kind == "on":
                s.noteon(ch, int(a), int(b))
            elif kind == "off":
                s.noteoff(ch, int(a))
            elif kind == "cc":
                s.cc(ch, int(a), int(b))
            else:
                s.pitch_bend(ch, int(a))
        for ch in range(16):
            s.cc(ch, 123, 0)  # all notes off -> release tail
        chunks.append(s.get_samples(int(tail_seconds * self.sample_rate)))
        stereo = np.concatenate(chunks).astype(np.float32).reshape(-1, 2)
        x = stereo.mean(axis=1) / 32768.0
        peak = float(np.max(np.abs(x)))
        if peak < 1e-4:
            raise SynthError(f"render is silent (soundfont {soundfont})")
        return (0.9 * x / peak).astype(np.float32)

    def close(self):
        self.synth.delete()
