"""JSON-lines manifests of audio: the corpus builder's `manifest.jsonl`, evaluation sets, users' lists.

One JSON object per line, with at least `audio`: a path (relative to the manifest's folder, or
absolute) or `{"16000": path, ...}` (the corpus's rows, one file per built rate; the 16 kHz one is
read).  Other fields depend on the reader: `clip_id` / `id`, `split`, `tags` ({attribute:
[tag, ...]} or a list), `texts`, `text`.

    rows = read_manifest("corpus/manifest.jsonl")     # dicts, with `_path` (absolute) and `_tags`
    for line, row in read_rows(path): ...             # the raw objects, numbered; errors name path:line
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator


def read_rows(path: str) -> Iterator[tuple[int, dict]]:
    """(line number, JSON object) for every non-blank line; ValueError names `path line N`."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise ValueError(f"{path} line {n}: not UTF-8 ({e.reason} at byte {e.start})") from None
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {n}: not JSON ({e})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path} line {n}: a JSON object is expected, not {type(row).__name__}")
            yield n, row


def audio_path(audio, manifest: str, rate: int = 16000) -> str:
    """A row's `audio` (a path or {rate: path}) as a path; relative ones are relative to `manifest`'s folder."""
    if isinstance(audio, dict):
        audio = audio.get(str(rate)) or next(iter(audio.values()))
    return os.path.join(os.path.dirname(os.path.abspath(manifest)), str(audio))


def read_manifest(path: str) -> list[dict]:
    """Every row, with `_path` (its audio, absolute), `_tags` ({attribute: [tags]}) and `clip_id`
    (the row's, or its `id`, or `row<N>`)."""
    rows = []
    for n, r in read_rows(path):
        if "audio" not in r:
            raise ValueError(f"{path} line {n}: no 'audio' field.")
        r["_path"] = audio_path(r["audio"], path)
        tags = r.get("tags", {})
        r["_tags"] = tags if isinstance(tags, dict) else {"tag": list(tags)}
        r.setdefault("clip_id", r.get("id", f"row{n}"))
        rows.append(r)
    return rows
