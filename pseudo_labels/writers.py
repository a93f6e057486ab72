"""Caption writers for the caption bank (docs/PAPERS.md §3): each turns one song into raw descriptions.

A song is a dict: `id`, `title`, `artist` (or `composer`), optionally `midi` (a file), `audio`,
and `metadata` (instruments, genre, tempo_bpm, key, time_signature, ensemble, dance, ...: the
fields a corpus manifest row carries).  A writer's `write(song, n)` returns up to `n` answers
(strings, one paragraph each) and raises `WriterError` when this song cannot be described (the
bank records it and goes on).

* `LanguageModelWriter`: a language model behind an OpenAI-compatible HTTP endpoint that the user
  runs (vLLM, llama.cpp's server, text-generation-inference, Ollama...).  The paper's few-shot
  prompt ends in `"{title}" by {artist} :`; samples come from `n` (or repeated requests when a
  server ignores it).  Timeouts, retries with exponential back-off on connection errors, 429 and
  5xx; other HTTP errors are the song's failure.  Thread-safe (the bank calls it concurrently).
* `MidicapWriter`: the third-party rule-based `midicap` captioner over the song's MIDI file
  (MusicCaps-style paragraphs: instruments, key, tempo, chords), several seeded variations.
* `TemplateWriter`: sentences from templates over the song's metadata, seeded per song.
* `HumanWriter`: human-written caption sentences the song comes with (docs/PAPERS.md §3 adds them to the
  bank): `captions` in the songs file, or a corpus work's long-form descriptions.
"""
from __future__ import annotations

import contextlib
import io
import json
import random
import threading
import time
import urllib.error
import urllib.request
import zlib

from data import weak_text

FEW_SHOT = (
    "Write a short description of the music of each song: its instruments, genre, mood and tempo.\n\n"
    '"Clair de Lune" by Claude Debussy : A slow, dreamy solo piano piece. Soft arpeggios float over '
    "gentle, shimmering harmonies, and the mood is calm and nostalgic.\n\n"
    '"Take Five" by The Dave Brubeck Quartet : A cool jazz tune in an unusual five-beat meter. An '
    "alto saxophone plays a smooth melody over a repeating piano vamp, brushed drums and walking "
    "double bass.\n\n"
    '"Smells Like Teen Spirit" by Nirvana : A loud, angry grunge rock song with distorted electric '
    "guitars, pounding drums and a quiet verse that explodes into a noisy chorus.\n\n"
)


class WriterError(RuntimeError):
    """This song could not be described by this writer (recorded, never fatal to the bank)."""


def song_seed(song: dict, salt: str) -> int:
    return zlib.crc32(f"{salt}:{song['id']}".encode())


def song_artist(song: dict) -> str:
    return song.get("artist") or song.get("composer") or ""


class LanguageModelWriter:
    name = "lm"

    def __init__(self, url: str, model: str = "", api: str = "completions", prompt: str = FEW_SHOT,
                 max_tokens: int = 120, temperature: float = 0.9, timeout_s: float = 60.0, retries: int = 4,
                 backoff_s: float = 1.0, api_key: str = ""):
        if api not in ("completions", "chat"):
            raise ValueError(f"--lm_api must be 'completions' or 'chat', got {api!r}")
        self.url = url.rstrip("/")
        if not self.url.endswith("/v1"):
            self.url += "/v1"
        self.model, self.api, self.prompt = model, api, prompt
        self.max_tokens, self.temperature = max_tokens, temperature
        self.timeout_s, self.retries, self.backoff_s, self.api_key = timeout_s, retries, backoff_s, api_key
        self.requests = 0
        self.retried = 0
        self._lock = threading.Lock()

    def prompt_for(self, song: dict) -> str:
        title = song.get("title") or next(iter(song.get("catalogue") or []), "") or song["id"].split(":")[-1]
        artist = song_artist(song) or "an unknown artist"
        return f'{self.prompt}"{title}" by {artist} :'

    def _post(self, path: str, body: dict) -> dict:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                with self._lock:
                    self.retried += 1
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            with self._lock:
                self.requests += 1
            req = urllib.request.Request(self.url + path, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                    return json.loads(r.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} from {self.url + path}: {e.read()[:200]!r}"
                if e.code != 429 and e.code < 500:
                    raise WriterError(last) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                last = f"{type(e).__name__} talking to {self.url + path}: {getattr(e, 'reason', e)}"
            except json.JSONDecodeError as e:
                last = f"not JSON from {self.url + path}: {e}"
        raise WriterError(f"{last} (gave up after {self.retries + 1} attempts, timeout {self.timeout_s:g} s)")

    def write(self, song: dict, n: int) -> list[str]:
        prompt = self.prompt_for(song)
        out: list[str] = []
        for _ in range(n):  # at most n requests: servers that honour `n` answer in the first
            need = n - len(out)
            if self.api == "completions":
                r = self._post("/completions", {"model": self.model, "prompt": prompt, "n": need,
                                                "max_tokens": self.max_tokens, "temperature": self.temperature,
                                                "stop": ["\n\n", '\n"']})
                texts = [c.get("text", "") for c in r.get("choices", [])]
            else:
                r = self._post("/chat/completions", {
                    "model": self.model, "n": need, "max_tokens": self.max_tokens, "temperature": self.temperature,
                    "messages": [{"role": "user", "content": prompt}]})
                texts = [(c.get("message") or {}).get("content", "") for c in r.get("choices", [])]
            if "choices" not in r:
                raise WriterError(f"no 'choices' in the answer of {self.url}: {str(r)[:200]}")
            out.extend(t.strip() for t in texts[:need] if t and t.strip())
            if len(out) >= n:
                break
        return out


class MidicapWriter:
    name = "midicap"

    def __init__(self):
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a banner on import (main thread)
            from midicap import analyze_midi, generate_midi_description
        self._analyze, self._describe = analyze_midi, generate_midi_description

    def write(self, song: dict, n: int) -> list[str]:
        path = song.get("midi")
        if not path:
            raise WriterError("no MIDI file")
        # No stdout redirection here: it swaps the process-wide sys.stdout, which races between
        # the writer threads (only midicap's import prints).
        try:
            human, numeric = self._analyze(path)
        except Exception as e:  # third-party analyser: any failure is this file's
            raise WriterError(f"midicap cannot analyse {path}: {type(e).__name__}: {e}") from None
        seed = song_seed(song, "midicap")
        out = []
        for i in range(n):
            text = self._describe(human, numeric, deterministic=False, seed=seed + i)
            if text and text not in out:
                out.append(text)
        if not out:
            raise WriterError(f"midicap wrote nothing for {path}")
        return out


_MOODS = {"major": ["bright", "cheerful", "warm", "uplifting"], "minor": ["dark", "melancholic", "wistful", "somber"]}
_TEMPLATES = [
    "A {tempo} {genre} piece played by {instruments}.",
    "{Instruments} play a {mood} {genre} tune in {meter} time.",
    "This {genre} track features {instruments} at about {bpm} beats per minute.",
    "A {mood} {dance} in {mode} for {ensemble}.",
    "{Tempo} and {mood}, with {instruments} in {key}.",
    "An instrumental {genre} recording: {instruments}, {tempo}, {mode} key.",
    "The {ensemble} plays a {tempo} {dance} with a {mood} character.",
    "Music for {ensemble} in a {genre} style, {tempo}, in {meter}.",
]


def _join(items: list[str]) -> str:
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


class TemplateWriter:
    name = "template"

    def write(self, song: dict, n: int) -> list[str]:
        m = song.get("metadata") or {}
        rng = random.Random(song_seed(song, "template"))
        # Each instrument by its plain name ("piano") or, now and then, its GM patch name.
        inst = sorted({(i.get("name") if rng.random() < 0.3 and i.get("name") else i.get("tag") or i.get("name")
                        or "").lower() for i in m.get("instruments", [])} - {""})
        genres = [g for g in m.get("genre", []) if g] or [t for t in m.get("tags", {}).get("genre", [])]
        bpm = m.get("tempo_bpm")
        key = m.get("key") or ""
        mode = key.split(" ")[-1] if key.split(" ")[-1:] in (["major"], ["minor"]) else ""
        fields = {
            "instruments": _join(rng.sample(inst, min(len(inst), 3))) if inst else "",
            "genre": rng.choice(genres) if genres else "",
            "tempo": weak_text.tempo_word(bpm) if bpm else "",
            "bpm": str(int(round(bpm))) if bpm else "",
            "meter": m.get("time_signature") or "",
            "key": key, "mode": mode,
            "mood": rng.choice(_MOODS[mode]) if mode else "",
            "dance": m.get("dance") or "",
            "ensemble": m.get("ensemble") or "",
        }
        out = []
        for t in rng.sample(_TEMPLATES, len(_TEMPLATES)):
            needed = {f.lower() for f in _placeholders(t)}
            if any(not fields[f] for f in needed):
                continue
            text = t.format(**fields, **{k.capitalize(): v[:1].upper() + v[1:] for k, v in fields.items() if v})
            out.append(text)
            if len(out) == n:
                break
        if not out:
            raise WriterError("too little metadata for any template")
        return out


def _placeholders(template: str) -> list[str]:
    import string

    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


class HumanWriter:
    """Human-written sentences the song already has: its `captions` (a list given in the songs
    file) or, for a corpus work, its long-form descriptions (MMA's groove and style notes)."""
    name = "human"

    def write(self, song: dict, n: int) -> list[str]:
        texts = list(song.get("captions") or [])
        if not texts:  # a corpus work: the long-form texts the data pipeline's filter kept
            meta = song.get("metadata") or {}
            long = (meta.get("texts") or {}).get("long", [])
            ok = (meta.get("text_ok") or {}).get("long", [True] * len(long))
            texts = [t for t, keep in zip(long, ok) if keep]
        if not texts:
            raise WriterError("no human-written captions")
        return texts[:n] if n else texts


def make_writers(names: list[str], **lm_kwargs) -> list:
    writers = []
    for n in names:
        if n == "lm":
            if not lm_kwargs.get("url"):
                raise ValueError("writer 'lm' needs --lm_url (an OpenAI-compatible endpoint you run)")
            writers.append(LanguageModelWriter(**lm_kwargs))
        elif n == "midicap":
            writers.append(MidicapWriter())
        elif n == "template":
            writers.append(TemplateWriter())
        elif n == "human":
            writers.append(HumanWriter())
        else:
            raise ValueError(f"unknown writer {n!r} in --writers (choose from lm, midicap, template, human)")
    return writers
