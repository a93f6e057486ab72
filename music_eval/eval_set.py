"""An evaluation set from a built corpus's held-out split (what `python -m music_eval.write_eval_set`
runs): one caption per clip, written from the clip's own metadata by the same template writer as
the caption bank (instruments, genre, tempo, key; `pseudo_labels.writers.TemplateWriter`), so each
prompt has a real recording it describes.

    summary = build(corpus_dir, out, split="test")

    OUT/reference.jsonl   {"id", "audio" (absolute path, 16 kHz), "text", "work_id", "duration_s"} per clip
    OUT/prompts.txt       the same captions, one per line, in the same order: the sampler's --prompts

Then `noise2music.sample --prompts=OUT/prompts.txt` generates one clip per reference clip and
`music_eval.evaluate --reference=OUT` pairs them by prompt text (ground truth, shuffled-pair
baselines, FAD against the split).
"""
from __future__ import annotations

import json
import os

from pseudo_labels import writers as caption_writers


def build(corpus_dir: str, out: str, split: str = "test", max_clips: int | None = None) -> dict:
    manifest = os.path.join(corpus_dir, "manifest.jsonl")
    if not os.path.exists(manifest):
        raise FileNotFoundError(f"--corpus={corpus_dir}: no manifest.jsonl (build it with `python -m data.build_corpus`)")
    writer = caption_writers.TemplateWriter()
    rows, skipped = [], 0
    with open(manifest, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r.get("split") != split:
                continue
            audio = (r.get("audio") or {}).get("16000")
            if not audio:
                skipped += 1
                continue
            meta = {k: v for k, v in r.items() if k not in ("audio", "midi", "seed")}
            try:
                text = writer.write({"id": r["clip_id"], "metadata": meta}, 1)[0]
            except caption_writers.WriterError:
                skipped += 1
                continue
            rows.append({"id": r["clip_id"], "audio": os.path.abspath(os.path.join(corpus_dir, audio)),
                         "text": text, "work_id": r.get("work_id"), "duration_s": r.get("duration_s")})
            if max_clips and len(rows) >= max_clips:
                break
    if not rows:
        raise ValueError(f"--corpus={corpus_dir}: no usable clips in split {split!r}")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "reference.jsonl"), "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    with open(os.path.join(out, "prompts.txt"), "w", encoding="utf-8") as f:
        f.write(f"# {len(rows)} captions of the {split} split of {corpus_dir} (music_eval.eval_set), one per clip\n")
        for r in rows:
            f.write(r["text"].replace("\n", " ") + "\n")
    return {"out": os.path.abspath(out), "clips": len(rows), "skipped": skipped, "split": split,
            "works": len({r["work_id"] for r in rows}), "distinct_texts": len({r["text"] for r in rows})}
