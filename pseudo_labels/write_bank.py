"""`python -m pseudo_labels.write_bank (--songs=F | --corpus=DIR) --out=DIR [--writers=template,midicap,lm]`.

Builds the caption bank of pseudo-labelling (docs/PAPERS.md §3; `pseudo_labels.bank`): many short
descriptions written for a list of songs, cleaned so that they fit *other* music too.

    OUT/raw.jsonl        every writer's answers per song, appended as they come (the resume log)
    OUT/captions.jsonl   the bank: {"id", "text", "song_id", "writer"} per sentence
    OUT/tags.jsonl       the short-tag vocabulary: {"id", "text", "category"}
    OUT/failures.jsonl   (song, writer) pairs that failed, with the reason
    OUT/stats.json       counts at each cleaning step, per writer, and the bank's statistics

Songs: `--songs` is JSON lines of {"id", "title", "artist" or "composer", optional "midi",
"audio", "metadata"}; `--corpus` takes one song per work of a built corpus (`--split`, default
train).  Writers: `template` and `midicap` run offline; `lm` asks an OpenAI-compatible server the
user runs (`--lm_url`).  Resumable: a re-run skips every (song, writer) already in raw.jsonl.  The
last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import os
import sys

from common import cli
from data import paths
from pseudo_labels import bank, writers


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--songs", help="JSON lines: id, title, artist/composer, midi, audio, metadata")
    src.add_argument("--corpus", help="a built corpus folder: one song per work (default: the demo corpus)")
    ap.add_argument("--split", default="train", help="--corpus: the split whose works are captioned ('' = all)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--writers", default="template,midicap", help="comma-separated: lm, midicap, template, human")
    ap.add_argument("--samples", default="lm=4,midicap=3,template=4,human=0",
                    help="answers per song, per writer (human: 0 = all)")
    ap.add_argument("--workers", type=int, default=4, help="songs written concurrently (the LM server's batch)")
    ap.add_argument("--no_filter", action="store_true", help="keep sentences the text filter rejects")
    ap.add_argument("--lm_url", default="", help="OpenAI-compatible server, e.g. http://localhost:8000/v1")
    ap.add_argument("--lm_model", default="")
    ap.add_argument("--lm_api", default="completions", choices=["completions", "chat"])
    ap.add_argument("--lm_prompt_file", default="", help="few-shot prefix (default: pseudo_labels.writers.FEW_SHOT)")
    ap.add_argument("--lm_max_tokens", type=int, default=120)
    ap.add_argument("--lm_temperature", type=float, default=0.9)
    ap.add_argument("--lm_timeout_s", type=float, default=60.0)
    ap.add_argument("--lm_retries", type=int, default=4)
    ap.add_argument("--lm_api_key_env", default="OPENAI_API_KEY", help="environment variable with the key, if any")
    ap.add_argument("--no_progress", action="store_true")
    args = ap.parse_args(argv)

    with cli.exit_on(ValueError, FileNotFoundError, OSError):
        samples = {k: int(v) for k, v in (kv.split("=") for kv in args.samples.split(",") if kv)}
        names = [n.strip() for n in args.writers.split(",") if n.strip()]
        for n in names:
            samples.setdefault(n, 3)
        lm = {}
        if "lm" in names:
            prompt = writers.FEW_SHOT
            if args.lm_prompt_file:
                with open(args.lm_prompt_file, encoding="utf-8") as f:
                    prompt = f.read()
            lm = dict(url=args.lm_url, model=args.lm_model, api=args.lm_api, prompt=prompt,
                      max_tokens=args.lm_max_tokens, temperature=args.lm_temperature, timeout_s=args.lm_timeout_s,
                      retries=args.lm_retries, api_key=os.environ.get(args.lm_api_key_env, ""))
        made = writers.make_writers(names, **lm)
        if args.songs:
            songs = bank.read_songs(args.songs)
        else:
            songs = bank.songs_from_corpus(paths.corpus_dir(args.corpus), args.split or None)
    stats = bank.build(songs, args.out, made, samples, workers=args.workers, use_filter=not args.no_filter,
                       progress=not args.no_progress)
    print(f"caption bank: {stats['captions']} captions from {stats['songs_with_captions']}/{stats['songs']} songs, "
          f"{stats['tags']} tags, {stats['jobs_failed']} failed (song, writer) pairs -> {stats['out']}", file=sys.stderr)
    cli.print_json({k: v for k, v in stats.items() if k != "per_writer"} | {"per_writer": stats["per_writer"]})
    return stats


if __name__ == "__main__":
    main()
