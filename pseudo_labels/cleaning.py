"""Cleaning language-model answers into caption sentences that fit *other* music (docs/PAPERS.md §3).

    sentences = split_sentences(answer)
    clean = [remove_names(s, names_of(song)) for s in sentences]   # no title / artist / composer
    bank = dedupe(s for s in clean if s)

`remove_names` deletes every mention of the song's title and its people, whole-word and
case-insensitively: the full name, the surname alone ("Bach", "Bach's"), quoted titles, and the
connecting words left dangling ("by", "from", "of", "the" right before a removed name).  A sentence
with fewer than three words left is dropped (None).
"""
from __future__ import annotations

import re
import unicodedata
from typing import Iterable

from data import weak_text

_PARTICLES = {"van", "von", "der", "de", "da", "di", "del", "le", "la", "des", "du", "the"}


def _fold(s: str) -> str:
    """Lower case without accents (so 'Dvořák' matches 'Dvorak')."""
    return "".join(c for c in unicodedata.normalize("NFKD", s.lower()) if not unicodedata.combining(c))


def split_sentences(text: str) -> list[str]:
    """Sentences of a language model's answer: each line loses its list marker ("1.", "-", "*")
    and surrounding quotes, then is split as the weak-text sources are (`weak_text.split_sentences`)."""
    out = []
    for line in re.split(r"[\r\n]+", text):
        line = re.sub(r"^\s*(?:[-*\u2022]|\d+[.)])\s*", "", line).strip().strip('"').strip()
        out.extend(weak_text.split_sentences(line))
    return out


def name_variants(name: str) -> list[str]:
    """'Johann Sebastian Bach' -> the full name and the surname ('Bach'); particles kept with it
    ('Ludwig van Beethoven' -> 'van Beethoven', 'Beethoven')."""
    name = " ".join(name.split())
    if not name:
        return []
    parts = name.split(" ")
    out = [name]
    if len(parts) > 1:
        last = parts[-1]
        i = len(parts) - 2
        while i > 0 and parts[i].lower() in _PARTICLES:
            out.append(" ".join(parts[i:]))
            i -= 1
        if len(last) > 2:
            out.append(last)
    return out


def remove_names(sentence: str, names: Iterable[str], min_words: int = 3, titles: Iterable[str] = ()) -> str | None:
    """The sentence without any of `names` (artists, composers: also by surname) or `titles`
    (removed only whole); None if fewer than `min_words` words are left."""
    folded = _fold(sentence)
    spans = []
    variants = sorted({v for n in names for v in name_variants(n)} | {" ".join(t.split()) for t in titles if t},
                      key=len, reverse=True)
    for v in variants:
        fv = _fold(v)
        if len(fv) < 2:
            continue
        for m in re.finditer(r"(?<![\w])[\"'“‘]?" + re.escape(fv) + r"[\"'”’]?(?:'s|’s|s')?(?![\w])", folded):
            spans.append((m.start(), m.end()))
    if not spans:
        return sentence.strip()
    spans.sort()
    merged = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    out, pos = [], 0
    for a, b in merged:
        out.append(sentence[pos:a])
        pos = b
    out.append(sentence[pos:])
    text = "\x00".join(out)
    # Connectors left pointing at nothing: "a piece by \x00" -> "a piece".
    text = re.sub(r"\s*\b(?:(?:by|from|of|composer|artist|titled|called|named|entitled)\s+)?(?:the\s+)?(?=\x00)",
                  "", text, flags=re.I)
    text = text.replace("\x00", " ")
    text = re.sub(r"\(\s*\)|\[\s*\]|\"\s*\"", " ", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"([,;:])\s*(?=[,.;:!?]|$)", "", text)
    text = re.sub(r"^[\s,;:.\-]+", "", re.sub(r"\s+", " ", text)).strip()
    if text and text[0].islower():
        text = text[0].upper() + text[1:]
    words = re.findall(r"[A-Za-z]+", text)
    if len(words) < min_words:
        return None
    return text


def dedupe_items(items: Iterable, key=lambda x: x) -> list:
    """First item of each `key(item)` sentence, compared case-, space- and punctuation-insensitively."""
    seen, out = set(), []
    for item in items:
        k = re.sub(r"[^\w]+", " ", _fold(key(item))).strip()
        if k and k not in seen:
            seen.add(k)
            out.append(item)
    return out


def dedupe(sentences: Iterable[str]) -> list[str]:
    """First occurrence of each sentence, compared case-, space- and punctuation-insensitively."""
    return dedupe_items(sentences)
