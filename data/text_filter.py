"""Is this text about the music? Rules for short-form text, a small classifier for long-form.

MuLan filtered its weakly associated long-form text with a BERT classifier fine-tuned on ~700
labelled sentences, and short-form text with rules (docs/PAPERS.md §1). Here:

* `short_form_ok(text)`: rules that reject what web metadata is full of and a tag never is:
  catalogue ids and numbers ("BWV 432", "A0001", "track 03"), e-mail addresses and URLs, file
  names, dates, durations, over-long strings.
* `LongFormFilter`: logistic regression on hashed word unigrams/bigrams and character trigrams,
  trained (in well under a second, deterministically) on `data/text_filter_labels.jsonl`: 478
  third-party sentences from MMA's style docs and groove descriptions and the header notes of the
  music21 corpus's ABC collections, each labelled by hand 1 = describes the sound, style,
  instrumentation, tempo or mood; 0 = anything else (provenance, usage notes, song references,
  transcriber credits, lyrics structure). `python -m data.evaluate_text_filter` prints its
  5-fold cross-validated accuracy (`cross_validate`) and the JSON line.

Filtering is a setting of the tasks (`filter_text`); this module only marks text.
"""
from __future__ import annotations

import functools
import json
import os
import re
import zlib

import numpy as np

LABELS_FILE = os.path.join(os.path.dirname(__file__), "text_filter_labels.jsonl")
_DIM = 1 << 14

_CATALOGUE = re.compile(r"^(?=.*\d)[A-Za-z]{0,6}[\s#.:/_-]*\d[\w.:/#-]*$")  # BWV432, K.155, A0001, 0811-0899
_BAD = [
    re.compile(r"\S+@\S+|https?://|www\.", re.I),  # e-mail, URLs
    re.compile(r"\.(abc|mid|midi|mxl|krn|wav|mp3|flac|sf2|sf3)\b", re.I),  # file names
    re.compile(r"^\s*(track|disc|cd|no\.?|vol\.?)\s*\d+\s*$", re.I),
    re.compile(r"\b(op\.?|opus|bwv|hob\.?|kv?\.?)\s*\d", re.I),  # catalogue numbers
    re.compile(r"\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b"),  # dates
    re.compile(r"^\d+:\d{2}$"),  # durations
    re.compile(r"_"),  # identifiers (soundfont names, paths)
]


def short_form_ok(text: str, max_words: int = 8) -> bool:
    """Rules for tags and titles: True when `text` could be a music tag or a title."""
    t = " ".join(str(text).split())
    if re.fullmatch(r"\d{1,2}/\d{1,2}( time)?", t):  # a time signature is a music tag
        return True
    if not t or not re.search(r"[A-Za-z]", t):
        return False
    if len(t.split()) > max_words or len(t) > 64:
        return False
    if _CATALOGUE.match(t):
        return False
    return not any(p.search(t) for p in _BAD)


def _features(text: str) -> np.ndarray:
    t = text.lower()
    words = re.findall(r"[a-z0-9&#']+", t)
    grams = [f"w:{w}" for w in words] + [f"b:{a} {b}" for a, b in zip(words, words[1:])]
    padded = f" {t} "
    grams += [f"c:{padded[i:i + 3]}" for i in range(len(padded) - 2)]
    v = np.zeros(_DIM, np.float32)
    for g in grams:
        h = zlib.crc32(g.encode())
        v[h % _DIM] += 1.0 if (h >> 20) & 1 else -1.0
    n = np.linalg.norm(v)
    return v / n if n else v


def load_labels(path: str = LABELS_FILE) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                r = json.loads(line)
                if r.get("label") not in (0, 1) or not r.get("text"):
                    raise ValueError(f"{path}:{i}: each row needs 'text' and 'label' 0/1")
                rows.append(r)
    return rows


class LongFormFilter:
    """L2-regularised logistic regression, full-batch gradient descent (deterministic)."""

    def __init__(self, texts: list[str], labels: list[int], *, l2: float = 1e-3, steps: int = 300, lr: float = 2.0):
        x = np.stack([_features(t) for t in texts])
        y = np.asarray(labels, np.float32)
        w, b = np.zeros(_DIM, np.float32), 0.0
        for _ in range(steps):
            p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
            g = p - y
            w -= lr * (x.T @ g / len(y) + l2 * w)
            b -= lr * float(g.mean())
        self.w, self.b = w, b

    def prob(self, texts: list[str], chunk: int = 2048) -> np.ndarray:
        """P(about the music) per text; features are built `chunk` texts at a time (each text's
        hashed vector is 2^14 wide, so a large bank at once would not fit in memory)."""
        out = [np.zeros([0])]
        for s in range(0, len(texts), chunk):
            x = np.stack([_features(t) for t in texts[s:s + chunk]])
            out.append(1.0 / (1.0 + np.exp(-(x @ self.w + self.b))))
        return np.concatenate(out)

    def __call__(self, text: str, threshold: float = 0.5) -> bool:
        return bool(self.prob([text])[0] >= threshold)


@functools.lru_cache(maxsize=1)
def default_long_form_filter() -> LongFormFilter:
    rows = load_labels()
    return LongFormFilter([r["text"] for r in rows], [r["label"] for r in rows])


def cross_validate(folds: int = 5, seed: int = 0) -> dict:
    rows = load_labels()
    idx = np.random.default_rng(seed).permutation(len(rows))
    correct, tp, fp, fn = 0, 0, 0, 0
    for k in range(folds):
        test = set(idx[k::folds].tolist())
        train = [rows[i] for i in range(len(rows)) if i not in test]
        clf = LongFormFilter([r["text"] for r in train], [r["label"] for r in train])
        tr = [rows[i] for i in sorted(test)]
        pred = clf.prob([r["text"] for r in tr]) >= 0.5
        for r, p in zip(tr, pred):
            correct += int(p == bool(r["label"]))
            tp += int(p and r["label"] == 1)
            fp += int(p and r["label"] == 0)
            fn += int((not p) and r["label"] == 1)
    pos = sum(r["label"] for r in rows)
    return dict(examples=len(rows), positives=pos, folds=folds, accuracy=correct / len(rows),
                precision=tp / max(tp + fp, 1), recall=tp / max(tp + fn, 1),
                majority_baseline=max(pos, len(rows) - pos) / len(rows))
