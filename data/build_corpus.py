r"""`python -m data.build_corpus [--preset demo] [--out DIR] [--skip_if_built]`: builds a corpus.

    python -m data.build_corpus --preset demo          # into the cache: ~/.cache/noise2music/corpus/demo
    python -m data.build_corpus --preset full --out /data/n2m_full --sample_rates=16000,24000 \
        --midi_dir=/path/to/my/midi --workers=8

Real music rendered to audio with ground-truth metadata and weak text (`data.corpus`: music21
works, MMA grooves, any MIDI folder; FluidSynth with the SoundFonts found).  Output in --out
(default: `$N2M_CACHE_DIR` or `~/.cache/noise2music`, + `/corpus/<preset>`, where the tasks look
when `CORPUS_DIR` is not set): `audio/`, `midi/`, `manifest.jsonl`, `records/<split>-*.tfrecord`
(`records_24000/` etc. at the other rates), `spiece.model` (SentencePiece on the corpus text),
`report.json` and, last, `corpus.json`.  An interrupted build resumes; `--skip_if_built` does
nothing when `corpus.json` is already there (but trains a missing `spiece.model`).
The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import os

from common import cli
from data import paths


def main(argv=None) -> dict:
    from data import corpus, vocab

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(corpus.PRESETS), default="demo")
    ap.add_argument("--out", default=None, help="output folder (created; default: the cache's corpus/<preset>)")
    ap.add_argument("--skip_if_built", action="store_true", help="do nothing if --out holds a built corpus")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample_rates", default="16000", help="comma-separated, e.g. 16000,24000")
    ap.add_argument("--midi_dir", action="append", default=[], help="a folder of MIDI files to add (repeatable)")
    ap.add_argument("--soundfont", action="append", default=[], help="an extra .sf2/.sf3 file or folder (repeatable)")
    ap.add_argument("--soundfonts", default="", help="comma-separated names to use (default: all found)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--test_fraction", type=float, default=0.1)
    ap.add_argument("--max_clips", type=int, default=None, help="render only the first N planned clips")
    ap.add_argument("--records_per_shard", type=int, default=32)
    ap.add_argument("--no_progress", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rates = [int(r) for r in a.sample_rates.split(",") if r]
    if 16000 not in rates:
        ap.error("--sample_rates must include 16000 (the corpus's reference rate)")
    out = os.path.abspath(os.path.expanduser(a.out or paths.default_corpus_dir(a.preset)))
    if a.skip_if_built and paths.is_built(out):
        with open(os.path.join(out, "corpus.json")) as f:
            info = json.load(f)
        spiece = os.path.join(out, vocab.SPIECE)
        if not os.path.exists(spiece + ".model"):   # a corpus built before the SentencePiece model was added
            vocab.train_sentencepiece(out, spiece)
            print(f"[build_corpus] trained its SentencePiece vocabulary {spiece}.model")
        print(f"[build_corpus] a corpus is already built in {out} ({info['clips']} clips, preset "
              f"{info['preset']}); nothing to do")
        return cli.print_json({**info, "out": out, "skipped": True})
    rep = corpus.build(a.preset, out, seed=a.seed, sample_rates=rates, midi_dirs=a.midi_dir,
                       soundfont_files=a.soundfont, soundfont_names=[s for s in a.soundfonts.split(",") if s] or None,
                       workers=a.workers, test_fraction=a.test_fraction, max_clips=a.max_clips,
                       progress=not a.no_progress, records_per_shard=a.records_per_shard)
    print(f"[build_corpus] {rep['clips']} clips ({rep['hours']:.2f} h; train {rep['splits']['train']}, "
          f"test {rep['splits']['test']}) from {rep['works']} works in {rep['build_seconds']:.0f} s; "
          f"{rep['failed']} skipped (reasons in report.json); long-form text kept by the filter: "
          f"{100 * rep['long_form_kept_share']:.1f}%")
    print(f"[build_corpus] corpus written to {rep['out']} (manifest.jsonl, records/, report.json)")
    return cli.print_json({k: v for k, v in rep.items() if k != "skipped"})


if __name__ == "__main__":
    main()
