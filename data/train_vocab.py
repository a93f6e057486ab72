"""`python -m data.train_vocab --corpus=DIR --out=PREFIX [--vocab_size=8000]`.

Trains a unigram SentencePiece vocabulary on a built corpus's texts (`data.vocab.train_sentencepiece`)
and writes PREFIX.model and PREFIX.vocab.  `data.build_corpus` already writes DIR/spiece.model, the
Noise2Music text stages' default vocabulary; this retrains it (another size) or writes another.
The last stdout line is JSON.
"""
from __future__ import annotations

import argparse

from common import cli


def main(argv=None) -> dict:
    from data import vocab

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True, help="model prefix; writes PREFIX.model and PREFIX.vocab")
    ap.add_argument("--vocab_size", type=int, default=8000)
    a = ap.parse_args(argv)
    with cli.exit_on(FileNotFoundError):
        path = vocab.train_sentencepiece(a.corpus, a.out, a.vocab_size)
    v = vocab.T5SentencePieceVocabulary(path)
    print(f"[vocab] SentencePiece model with {v.vocab_size} pieces written to {path}")
    return cli.print_json({"model": path, "vocab_size": v.vocab_size})


if __name__ == "__main__":
    main()
