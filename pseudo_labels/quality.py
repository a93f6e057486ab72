"""How noisy and how biased are the pseudo-labels?  The audit `python -m pseudo_labels.audit` runs.

    result = audit(labels_dir)              # the labels folder of pseudo_labels.label
    files = write(result, out)              # audit.json, audit.md and the PNG plots

On a corpus with ground-truth metadata (the manifest's `tags`: instrument, genre, style, tempo,
mode, dance, ensemble), every assigned caption and tag is read for the attribute values it
mentions (a lexicon built from the truth values: GM patch names map to their instrument tag,
"120 bpm" to its tempo word, "moderately fast" to a tempo, plurals to singulars; the longest
phrase wins).  Then, per attribute, for the pseudo-labels and for a **random-caption baseline**
(the same number of captions per clip drawn uniformly from the same bank):

* coverage: the share of assigned labels that mention the attribute at all;
* agreement (1 - noise): the share of mentioning labels whose mentioned values include a true
  value of the clip; lift = agreement / the baseline's agreement;
* bias: the confusion matrix true value x mentioned value, its off-diagonal asymmetry
  (sum_{i<j} |C_ij - C_ji| / sum_{i!=j} C_ij: 0 = errors both ways alike, 1 = all one way) and its
  most one-sided pair; over-/under-representation: each value's share of the mentions against
  its share of the truth (ratio), and the total-variation distance between the two distributions.

Each attribute's pseudo-minus-random agreement comes with a 95% **paired bootstrap interval**
over clips (`agreement_difference`: clips resampled with replacement, both methods' agreement
recomputed on the same resample, 2,000 resamples): the labels beat random captions on an
attribute when the interval's lower end is above zero.

Figures for all clips and per split (the bank's captions were written for the train split's works,
so the test split sees only captions of other songs).  Writes DIR/audit.json, DIR/audit.md and
PNG plots; the last stdout line is JSON.
"""
from __future__ import annotations

import collections
import json
import os
import re

import numpy as np

from data import weak_text
from data.records import TAG_ATTRIBUTES
from pseudo_labels.bank import read_bank

ATTRIBUTES = TAG_ATTRIBUTES   # the corpus's ground-truth attributes
_TEMPO_PHRASES = {
    "slow": ["slow", "slowly", "very slow", "leisurely", "largo", "adagio", "unhurried"],
    "moderate tempo": ["moderate tempo", "moderate pace", "moderately paced", "medium tempo", "mid-tempo",
                       "moderate speed", "andante", "moderato"],
    "upbeat": ["upbeat", "moderately fast", "brisk", "lively", "allegretto"],
    "fast": ["fast", "very fast", "quick", "rapid", "allegro", "presto", "up-tempo", "uptempo"],
}


def _plural(w: str) -> list[str]:
    if w.endswith(("s", "x", "z", "ch", "sh")):
        return [w, w + "es"]
    return [w, w + "s"]


class Lexicon:
    """Attribute -> {phrase: value}; `mentions(text, attr)` finds the values a text mentions."""

    def __init__(self, values: dict[str, set[str]]):
        import pretty_midi

        from data import gm

        self.phrases: dict[str, dict[str, str]] = {}
        for attr, vals in values.items():
            p: dict[str, str] = {}
            for v in vals:
                for form in _plural(v.lower()):
                    p[form] = v
            if attr == "tempo":
                for v, forms in _TEMPO_PHRASES.items():
                    if v in vals:
                        p.update({f: v for f in forms})
            if attr == "instrument":
                for prog, name in enumerate(pretty_midi.constants.INSTRUMENT_MAP):
                    tag = gm.program_tag(prog)
                    if tag in vals:
                        low = name.lower()
                        for form in {low, re.sub(r"\s*\(.*?\)", "", low), re.sub(r"[()]", "", low),
                                     re.sub(r"\s+\d+$", "", re.sub(r"\s*\(.*?\)", "", low))}:
                            p.setdefault(" ".join(form.split()), tag)
                if "drums" in vals:
                    p.update({f: "drums" for f in ("drum", "drum kit", "drum set", "standard drum set")})
            self.phrases[attr] = p
        self._re = {a: re.compile(r"(?<![\w-])(" + "|".join(re.escape(k) for k in sorted(p, key=len, reverse=True))
                                  + r")(?![\w-])") for a, p in self.phrases.items() if p}
        self._bpm = re.compile(r"(\d{2,3})\s*(?:bpm|beats per minute)", re.I)

    def mentions(self, text: str, attr: str) -> set[str]:
        if attr not in self._re:
            return set()
        low = text.lower()
        found = {self.phrases[attr][m.group(1)] for m in self._re[attr].finditer(low)}
        if attr == "tempo":
            found |= {weak_text.tempo_word(float(m.group(1))) for m in self._bpm.finditer(low)}
            found &= set(self.phrases[attr].values())
        return found


def truth_of(row: dict) -> dict[str, list[str]]:
    t = row.get("tags") or weak_text.ground_truth_tags(row)
    return {a: list(t.get(a, [])) for a in ATTRIBUTES}


def attribute_metrics(pairs: list[tuple[set, list[str]]], values: list[str]) -> dict:
    """pairs: (truth values, mentioned value sets of each assigned label) per clip."""
    n_labels = mentions = agree = 0
    prec = []
    idx = {v: i for i, v in enumerate(values)}
    conf = np.zeros((len(values), len(values)), np.int64)
    p_true = np.zeros(len(values))
    p_men = np.zeros(len(values))
    for truth, labels in pairs:
        if not truth:
            continue
        for t in truth:
            p_true[idx[t]] += 1.0 / len(truth)
        for m in labels:
            n_labels += 1
            if not m:
                continue
            mentions += 1
            hit = m & truth
            agree += bool(hit)
            prec.append(len(hit) / len(m))
            for v in m:
                p_men[idx[v]] += 1.0 / len(m)
                for t in truth:
                    if v == t or v not in truth:
                        conf[idx[t], idx[v]] += 1
    off = conf - np.diag(np.diag(conf))
    total_off = off.sum()
    asym = float(np.abs(np.triu(off - off.T, 1)).sum() / total_off) if total_off else 0.0
    one_sided = None
    if total_off:
        d = off - off.T
        i, j = np.unravel_index(np.argmax(d), d.shape)
        if d[i, j] > 0:
            one_sided = {"true": values[i], "labelled": values[j], "count": int(off[i, j]), "reverse": int(off[j, i])}
    pt = p_true / p_true.sum() if p_true.sum() else p_true
    pm = p_men / p_men.sum() if p_men.sum() else p_men
    ratio = {v: (round(float(pm[i] / pt[i]), 3) if pt[i] > 0 else None) for v, i in idx.items()}
    return {
        "labels": n_labels, "mentions": mentions,
        "coverage": round(mentions / n_labels, 4) if n_labels else 0.0,
        "agreement": round(agree / mentions, 4) if mentions else None,
        "precision": round(float(np.mean(prec)), 4) if prec else None,
        "asymmetry": round(asym, 4), "most_one_sided": one_sided,
        "tvd": round(float(0.5 * np.abs(pm - pt).sum()), 4) if mentions else None,
        "true_share": {v: round(float(pt[i]), 4) for v, i in idx.items()},
        "label_share": {v: round(float(pm[i]), 4) for v, i in idx.items()},
        "ratio": ratio, "confusion": conf.tolist(),
    }


def _per_clip(pairs: list[tuple[set, list[set]]]) -> tuple[np.ndarray, np.ndarray]:
    """(agreeing labels, mentioning labels) per clip with a truth: what `agreement` sums."""
    kept = [(truth, labels) for truth, labels in pairs if truth]
    agree = np.array([sum(bool(m & truth) for m in labels if m) for truth, labels in kept], np.float64)
    mention = np.array([sum(bool(m) for m in labels) for _, labels in kept], np.float64)
    return agree, mention


def agreement_difference(pseudo: list, random_: list, n_boot: int = 2000, seed: int = 0,
                         level: float = 0.95) -> dict | None:
    """Agreement of `pseudo` minus that of `random_` (the pairs of `attribute_metrics`, the same
    clips in the same order) with a paired bootstrap interval over clips: each resample draws clips
    with replacement and recomputes both agreements (ratio of sums) on it.  None where either
    method never mentions the attribute."""
    ap, mp = _per_clip(pseudo)
    ar, mr = _per_clip(random_)
    if not mp.sum() or not mr.sum():
        return None
    idx = np.random.default_rng(seed).integers(0, len(ap), size=(n_boot, len(ap)))
    with np.errstate(invalid="ignore", divide="ignore"):
        d = ap[idx].sum(1) / mp[idx].sum(1) - ar[idx].sum(1) / mr[idx].sum(1)
    d = d[np.isfinite(d)]
    lo, hi = np.quantile(d, [(1 - level) / 2, (1 + level) / 2])
    return {"difference": round(float(ap.sum() / mp.sum() - ar.sum() / mr.sum()), 4), "low": round(float(lo), 4),
            "high": round(float(hi), 4), "level": level, "resamples": int(len(d)), "clips": int(len(ap))}


def audit(labels_dir: str, corpus_dir: str | None = None, seed: int = 0) -> dict:
    with open(os.path.join(labels_dir, "pseudo_labels.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    corpus_dir = corpus_dir or cfg["corpus_dir"]
    manifest = os.path.join(corpus_dir, "manifest.jsonl")
    if not os.path.exists(manifest):
        raise FileNotFoundError(f"{manifest}: no corpus manifest (pass --corpus)")
    with open(manifest, encoding="utf-8") as f:
        rows = {r["clip_id"]: r for r in map(json.loads, f)}
    labels_path = os.path.join(labels_dir, "labels.jsonl")
    with open(labels_path, encoding="utf-8") as f:
        labelled = [json.loads(line) for line in f if line.strip()]
    missing = [x["clip_id"] for x in labelled if x["clip_id"] not in rows]
    if missing:
        raise ValueError(f"{labels_path}: {len(missing)} clips not in {manifest} (e.g. {missing[0]!r}): wrong --corpus?")
    captions, tags = read_bank(cfg["bank_dir"])
    truth = {cid: truth_of(rows[cid]) for cid in (x["clip_id"] for x in labelled)}
    values = {a: sorted({v for t in truth.values() for v in t[a]}) for a in ATTRIBUTES}
    # A solo instrument as the "ensemble" is the instrument attribute's business: keep the true
    # ensembles (choir, string quartet, ...) only.
    solo = set(values["instrument"])
    values["ensemble"] = [v for v in values["ensemble"] if v not in solo]
    for t in truth.values():
        t["ensemble"] = [v for v in t["ensemble"] if v not in solo]
    values = {a: v for a, v in values.items() if v}
    lex = Lexicon({a: set(v) for a, v in values.items()})
    rng = np.random.default_rng(seed)
    kinds = {"captions": [c["text"] for c in captions], "tags": [t["text"] for t in tags]}
    assigned = {k: {x["clip_id"]: [c["text"] for c in x[k]] for x in labelled} for k in kinds}
    random_ = {k: {cid: [kinds[k][i] for i in rng.choice(len(kinds[k]), size=len(a), replace=False)]
                   for cid, a in assigned[k].items()} for k in kinds}
    # The oracle: captions written for the clip's own work (clips whose work is in the bank):
    # how well the writers and this lexicon can do at all.
    by_song: dict[str, list[str]] = collections.defaultdict(list)
    for c in captions:
        by_song[c.get("song_id", "")].append(c["text"])
    own_song = {"captions": {}}
    for x in labelled:
        pool = by_song.get(rows[x["clip_id"]].get("work_id", ""), [])
        if pool:
            n = min(len(pool), len(x["captions"]))
            own_song["captions"][x["clip_id"]] = [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]
    cache: dict = {}

    def men(text, attr):
        key = (text, attr)
        if key not in cache:
            cache[key] = lex.mentions(text, attr)
        return cache[key]

    splits = {"all": [x["clip_id"] for x in labelled]}
    for x in labelled:
        splits.setdefault(rows[x["clip_id"]].get("split") or "unknown", []).append(x["clip_id"])
    result = {"labels_dir": os.path.abspath(labels_dir), "corpus_dir": os.path.abspath(corpus_dir),
              "clips": len(labelled), "k": cfg["k"], "k_prime": cfg["k_prime"], "tag_k_prime": cfg["tag_k_prime"],
              "bank_captions": len(captions), "bank_tags": len(tags), "seed": seed,
              "split_clips": {s: len(c) for s, c in splits.items()}, "values": values, "splits": {}}
    for split, cids in splits.items():
        per = {}
        for attr, vals in values.items():
            per[attr] = {}
            for kind in kinds:
                pairs = {method: [(set(truth[c][attr]), [men(t, attr) for t in src[kind][c]]) for c in cids]
                         for method, src in (("pseudo", assigned), ("random", random_))}
                per[attr][kind] = {method: attribute_metrics(p, vals) for method, p in pairs.items()}
                per[attr][kind]["vs_random"] = agreement_difference(pairs["pseudo"], pairs["random"], seed=seed)
            own_ids = [c for c in cids if c in own_song["captions"]]
            if own_ids:
                per[attr]["captions"]["own_song"] = attribute_metrics(
                    [(set(truth[c][attr]), [men(t, attr) for t in own_song["captions"][c]]) for c in own_ids], vals)
            for kind in kinds:
                a, b = per[attr][kind]["pseudo"]["agreement"], per[attr][kind]["random"]["agreement"]
                per[attr][kind]["lift"] = round(a / b, 3) if a is not None and b else None
        result["splits"][split] = per
    own = [c.get("song_id") == x.get("work_id") for x in labelled for c in x["captions"]]
    result["own_song_caption_rate"] = round(float(np.mean(own)), 4) if own else 0.0
    return result


def headline(result: dict, split: str = "all", kind: str = "captions") -> dict:
    """Mention-weighted agreement over attributes, pseudo vs random (one figure each)."""
    out = {}
    for method in ("pseudo", "random", "own_song"):
        m = a = 0
        for attr in result["splits"][split].values():
            r = attr[kind].get(method)
            if r is None:
                continue
            if r["agreement"] is not None:
                m += r["mentions"]
                a += r["agreement"] * r["mentions"]
        out[method] = round(a / m, 4) if m else None
    return out


def _fmt(x, pct=True):
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.2f}"


def _interval(d: dict | None) -> str:
    """A difference of agreements with its interval, in points; bold where it excludes zero."""
    if not d:
        return "-"
    text = f"{100 * d['difference']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
    return f"**{text}**" if d["low"] > 0 or d["high"] < 0 else text


def beats_random(result: dict, split: str = "all", kind: str = "captions") -> dict[str, bool | None]:
    """Per attribute: does the interval of pseudo - random agreement lie above zero?"""
    out = {}
    for attr, r in result["splits"][split].items():
        d = r[kind].get("vs_random")
        out[attr] = None if not d else bool(d["low"] > 0)
    return out


def _one_sided(e: dict | None) -> str:
    return f"{e['true']} -> {e['labelled']} ({e['count']} vs {e['reverse']})" if e else "-"


def markdown(result: dict) -> str:
    lines = [f"# Pseudo-label audit: {result['clips']} clips, K={result['k']}, K'={result['k_prime']} captions, "
             f"{result['tag_k_prime']} tags", "",
             f"Bank: {result['bank_captions']} captions, {result['bank_tags']} tags. Labels: `{result['labels_dir']}`. "
             f"Truth: `{result['corpus_dir']}/manifest.jsonl`. Clips per split: {result['split_clips']}.", "",
             f"Share of assigned captions written for the clip's own work: {_fmt(result['own_song_caption_rate'])}.", ""]
    for split in result["splits"]:
        for kind in ("captions", "tags"):
            h = headline(result, split, kind)
            own = f", {_fmt(h['own_song'])} for own-song captions" if h.get("own_song") is not None else ""
            lines += [f"## {kind.capitalize()}, split `{split}`: agreement {_fmt(h['pseudo'])} "
                      f"vs {_fmt(h['random'])} for random {kind}{own}", "",
                      "| attribute | coverage | agreement | random | own song | lift | pseudo - random [95% CI] | asymmetry | "
                      "TVD | random TVD | over-represented | under-represented | most one-sided error |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for attr, r in result["splits"][split].items():
                p, q = r[kind]["pseudo"], r[kind]["random"]
                ratio = {v: x for v, x in p["ratio"].items() if x is not None and p["true_share"][v] >= 0.02}
                over = max(ratio, key=ratio.get) if ratio else None
                under = min(ratio, key=ratio.get) if ratio else None
                os_ = p["most_one_sided"]
                lines.append(
                    f"| {attr} | {_fmt(p['coverage'])} | {_fmt(p['agreement'])} | {_fmt(q['agreement'])} | "
                    f"{_fmt(r[kind].get('own_song', {}).get('agreement'))} | "
                    f"{_fmt(r[kind]['lift'], False)} | {_interval(r[kind].get('vs_random'))} | "
                    f"{_fmt(p['asymmetry'], False)} | {_fmt(p['tvd'], False)} | "
                    f"{_fmt(q['tvd'], False)} | {f'{over} x{ratio[over]:.2f}' if over and p['mentions'] else '-'} | "
                    f"{f'{under} x{ratio[under]:.2f}' if under and p['mentions'] else '-'} | "
                    f"{_one_sided(os_)} |")
            verdict = beats_random(result, split, kind)
            yes = [a for a, v in verdict.items() if v]
            no = [a for a, v in verdict.items() if v is False]
            lines += ["", f"Better than random {kind} (interval above zero): {', '.join(yes) or 'none'}; "
                          f"not: {', '.join(no) or 'none'}.", ""]
    lines += ["Coverage: share of assigned labels that mention the attribute. Agreement: share of those whose "
              "mentioned values include a true value (1 - noise). Own song: the agreement of captions written for "
              "the clip's own work (clips whose work is in the bank; the ceiling the writers and the lexicon allow). "
              "Lift: agreement / random agreement. Pseudo - random: the difference of agreements in points, with "
              "a 95% paired bootstrap interval over clips (bold: it excludes zero). Asymmetry: "
              "0 = confusions both ways alike, 1 = all one way. TVD: total-variation distance between the mentioned "
              "and the true value distribution. Over-/under-represented: largest / smallest ratio of label share "
              "to true share (values with at least 2% of the truth)."]
    return "\n".join(lines) + "\n"


def plots(result: dict, out: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    res = result["splits"]["all"]
    attrs = list(res)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, kind in zip(axes, ("captions", "tags")):
        x = np.arange(len(attrs))
        methods = [m for m in ("pseudo", "random", "own_song") if any(m in res[a][kind] for a in attrs)]
        w = 0.8 / len(methods)
        for i, method in enumerate(methods):
            ax.bar(x + (i - (len(methods) - 1) / 2) * w,
                   [(res[a][kind].get(method) or {}).get("agreement") or 0 for a in attrs], w,
                   label=method.replace("_", "-"))
        ax.set_xticks(x, attrs, rotation=30)
        ax.set_ylim(0, 1)
        ax.set_title(f"{kind}: agreement with the truth")
        ax.legend()
    fig.tight_layout()
    files.append(os.path.join(out, "agreement.png"))
    fig.savefig(files[-1], dpi=100)
    plt.close(fig)
    for attr in attrs:
        p, q = res[attr]["captions"]["pseudo"], res[attr]["captions"]["random"]
        vals = list(p["true_share"])
        fig, axes = plt.subplots(1, 2, figsize=(max(10, 0.5 * len(vals) + 6), 4.5))
        x = np.arange(len(vals))
        for off, (name, share) in zip((-0.27, 0, 0.27), (("truth", p["true_share"]), ("pseudo", p["label_share"]),
                                                          ("random", q["label_share"]))):
            axes[0].bar(x + off, [share[v] for v in vals], 0.27, label=name)
        axes[0].set_xticks(x, vals, rotation=60, ha="right", fontsize=7)
        axes[0].set_title(f"{attr}: value shares (captions)")
        axes[0].legend()
        conf = np.asarray(p["confusion"], float)
        conf = conf / np.maximum(conf.sum(1, keepdims=True), 1)
        axes[1].imshow(conf, cmap="viridis", vmin=0, vmax=1)
        axes[1].set_xticks(x, vals, rotation=60, ha="right", fontsize=7)
        axes[1].set_yticks(x, vals, fontsize=7)
        axes[1].set_xlabel("mentioned")
        axes[1].set_ylabel("true")
        axes[1].set_title(f"{attr}: confusion (row-normalised)")
        fig.tight_layout()
        files.append(os.path.join(out, f"{attr}.png"))
        fig.savefig(files[-1], dpi=100)
        plt.close(fig)
    return files


def write(result: dict, out: str) -> list[str]:
    """`out/audit.json`, `out/audit.md` and the plots; returns the files written."""
    os.makedirs(out, exist_ok=True)
    files = [os.path.join(out, "audit.json"), os.path.join(out, "audit.md")]
    with open(files[0], "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    with open(files[1], "w", encoding="utf-8") as f:
        f.write(markdown(result))
    return files + plots(result, out)


def summary(result: dict, out: str) -> dict:
    """The audit's headline figures (the binary's JSON line)."""
    s = {"out": out, "clips": result["clips"], "own_song_caption_rate": result["own_song_caption_rate"]}
    for split in result["splits"]:
        for kind in ("captions", "tags"):
            h = headline(result, split, kind)
            s[f"{split}_{kind}_agreement"], s[f"{split}_{kind}_random_agreement"] = h["pseudo"], h["random"]
            if kind == "captions":
                s[f"{split}_captions_own_song_agreement"] = h["own_song"]
    for split in result["splits"]:
        s[f"{split}_captions_beat_random"] = beats_random(result, split)
    s["per_attribute"] = {a: {"agreement": r["captions"]["pseudo"]["agreement"],
                              "random": r["captions"]["random"]["agreement"],
                              "vs_random": r["captions"]["vs_random"],
                              "asymmetry": r["captions"]["pseudo"]["asymmetry"],
                              "tvd": r["captions"]["pseudo"]["tvd"]} for a, r in result["splits"]["all"].items()}
    return s
