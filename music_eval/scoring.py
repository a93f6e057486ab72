"""The evaluation itself (docs/PAPERS.md §4): every system's figures beside the white-noise and
ground-truth baselines, per embedder, and the per-item view of the report.  What
`python -m music_eval.evaluate` runs (`evaluate(EvalSettings(...))`; the settings are its flags).

Systems, each a row of the report:
- the generated set, and every --compare set;
- "white noise": Gaussian noise with each generated clip's length and RMS (a floor any model must beat);
- "ground truth": the reference audio itself, against its own texts; its FAD is between two random
  halves of the reference set (the FAD real audio gets at that sample count).
Metrics, per embedder (FAD counts are embeddings: musicnn gives one per 3 s patch, MuLan one per clip):
- FAD against the whole reference set, with both counts, and FAD-infinity with `fad_inf`;
- MuLan similarity of each clip to its prompt's text, and to the reference audio whose text is the
  prompt; beside each, the shuffled-pair baseline (every mismatched pair);
- musicnn tag agreement: per MagnaTagATune tag that prompts name ("piano", "strings", "choir"...),
  the ROC-AUC of that tag's score between clips prompted with it and the rest; shuffled baseline.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

import numpy as np

from music_eval import metrics
from music_eval.cache import EmbeddingCache
from music_eval.inputs import RESERVED, EvalInputError, load_segments, read_generated, read_reference, white_noise

log = logging.getLogger("music_eval.evaluate")


@dataclasses.dataclass
class EvalSettings:
    """What to score and how (the flags of `music_eval.evaluate`)."""

    generated: str                      # a sampler folder, a manifest, or a folder with manifest.jsonl
    reference: str                      # a manifest or a music_eval.eval_set folder
    out: str
    mulan: str | None = None            # a MuLan run: adds the mulan embedder
    embedders: str | None = None        # comma-separated specs (default musicnn, + mulan with `mulan`)
    compare: list[str] = dataclasses.field(default_factory=list)   # NAME=SAMPLES
    name: str | None = None             # the generated system's row
    segment_seconds: float = 10.0
    no_noise_baseline: bool = False
    fad_inf: bool = False
    fad_inf_points: int = 15
    cache_dir: str | None = None        # default OUT/cache; 'none' disables
    generated_suffix: str = "_16k.wav"
    report_audio: str = "ogg"
    title: str = "Noise2Music evaluation"
    seed: int = 0


def _clip_level(outs: list[dict], key: str = "embeddings") -> np.ndarray:
    return np.stack([o[key].mean(0) for o in outs])


def score_system(outs: dict[str, list[dict]], texts: list[str], ref: dict, embedders: dict, a: EvalSettings,
                 ref_index: list[list[int] | None], fad_real: dict | None = None,
                 what: tuple[str, ...] = ("fad", "similarity", "tags")) -> dict:
    """outs: embedder name -> per-clip outputs; ref: the reference set's outputs and clip embeddings;
    ref_index: per clip, the reference clips whose text is its prompt (or None); fad_real: the real
    embeddings FAD compares with (default: the whole reference set)."""
    res: dict = {"n": len(texts), "fad": {}, "fad_inf": {}}
    for name, emb in embedders.items():
        if "fad" in what:
            gen = np.concatenate([o["embeddings"] for o in outs[name]])
            real = fad_real[name] if fad_real else np.concatenate([o["embeddings"] for o in ref["outs"][name]])
            try:
                res["fad"][name] = metrics.fad(real, gen)
                if a.fad_inf:
                    res["fad_inf"][name] = metrics.fad_infinity(real, gen, num_points=a.fad_inf_points, seed=a.seed)
            except ValueError as e:
                res["fad"][name] = {"fad": None, "error": str(e)}
        if emb.has_text and "similarity" in what:
            clip = _clip_level(outs[name])
            cache = ref.setdefault("texts", {})  # a system's prompts are often another's (white noise)
            if (name, tuple(texts)) not in cache:
                cache[(name, tuple(texts))] = emb.embed_texts(texts)
            txt = cache[(name, tuple(texts))]
            res[f"{name}_text"] = metrics.paired_similarity(clip, txt, groups=texts)
            paired = [i for i, r in enumerate(ref_index) if r]
            if paired:  # the mean embedding of the recordings whose text is the prompt
                ref_clip = np.stack([ref["clip"][name][ref_index[i]].mean(0) for i in paired])
                res[f"{name}_audio"] = metrics.paired_similarity(clip[paired], ref_clip,
                                                                 groups=[texts[i] for i in paired])
        if emb.tag_names and "tags" in what:
            scores = _clip_level(outs[name], "tags")
            t = metrics.tag_agreement(scores, texts, emb.tag_names)
            rng = np.random.default_rng(a.seed)
            shuffled = [metrics.tag_agreement(scores, texts, emb.tag_names, permutation=rng.permutation(len(texts)))
                        ["mean_auc"] for _ in range(20)]
            shuffled = [s for s in shuffled if s is not None]
            t["shuffled_mean_auc"] = float(np.mean(shuffled)) if shuffled else None
            res[f"{name}_tags"] = t
    return res


def evaluate(a: EvalSettings) -> dict:
    from music_eval import report as report_lib
    from music_eval.embedders import base as emb_lib

    t_start = time.time()
    if a.name in RESERVED:
        raise EvalInputError(f"--name={a.name!r} is a baseline's row; choose another")
    os.makedirs(a.out, exist_ok=True)
    gen_items = read_generated(a.generated, a.generated_suffix)
    ref_items = read_reference(a.reference)
    systems = {a.name or os.path.basename(os.path.normpath(a.generated)) or "generated": gen_items}
    for c in a.compare:
        name, sep, path = c.partition("=")
        if not sep or not name or not path:
            raise EvalInputError(f"--compare={c}: expected NAME=SAMPLES")
        if name in systems or name in RESERVED:
            raise EvalInputError(f"--compare={c}: the name {name!r} is taken; choose another")
        systems[name] = read_generated(path, a.generated_suffix, flag=f"--compare {name}")
    specs = a.embedders.split(",") if a.embedders else ["musicnn"] + (["mulan"] if a.mulan else [])
    embedders = {}
    for spec in specs:
        spec = spec.strip()
        if spec == "mulan" and a.mulan:
            spec = f"mulan:{a.mulan}"
        try:
            e = emb_lib.make(spec)
        except Exception as ex:  # the run / weights / plug-in named by the flag
            raise EvalInputError(f"--embedders: {spec}: {ex}") from None
        if e.info.name in embedders:
            raise EvalInputError(f"--embedders: {spec} is named {e.info.name!r} like another one; give each once")
        embedders[e.info.name] = e
        log.info("embedder %s: %s", spec, e.info)
    cache = EmbeddingCache(None if a.cache_dir == "none" else (a.cache_dir or os.path.join(a.out, "cache")))

    # Audio (middle segment) at each embedder's rate.
    rates = sorted({e.info.sample_rate for e in embedders.values()})
    waves: dict[str, dict[int, list]] = {}
    for name, items in [("ground truth", ref_items), *systems.items()]:
        waves[name] = {r: load_segments(items, r, a.segment_seconds) for r in rates}
        log.info("read %d clips of %s", len(items), name)
    first = next(iter(systems))
    if not a.no_noise_baseline:
        systems["white noise"] = gen_items
        waves["white noise"] = {r: white_noise(waves[first][r], a.seed) for r in rates}

    outs = {s: {n: cache.embed(e, waves[s][e.info.sample_rate], s) for n, e in embedders.items()} for s in waves}
    ref_texts = [it.text for it in ref_items]
    ref = {"outs": outs["ground truth"], "clip": {n: _clip_level(outs["ground truth"][n]) for n in embedders}}
    by_text: dict[str, list[int]] = {}
    for j, t in enumerate(ref_texts):
        by_text.setdefault(t, []).append(j)

    results = {}
    for s, items in systems.items():
        texts = [it.text for it in items]
        ref_index = [by_text.get(t) for t in texts]
        results[s] = {"kind": "baseline" if s == "white noise" else "generated",
                      **score_system(outs[s], texts, ref, embedders, a, ref_index)}
        log.info("scored %s", s)
    # Ground truth: the reference against its own texts; FAD between two random halves.
    rng = np.random.default_rng(a.seed)
    perm = rng.permutation(len(ref_items))
    half_a, half_b = perm[: len(perm) // 2], perm[len(perm) // 2:]
    gt_outs = {n: [outs["ground truth"][n][i] for i in half_b] for n in embedders}
    fad_real = {n: np.concatenate([outs["ground truth"][n][i]["embeddings"] for i in half_a]) for n in embedders}
    gt = score_system(gt_outs, [ref_texts[i] for i in half_b], ref, embedders, a, [None] * len(half_b), fad_real,
                      what=("fad",))
    # Similarity to text and tag agreement: the whole reference set against its own texts.
    gt.update({k: v for k, v in score_system(outs["ground truth"], ref_texts, ref, embedders, a,
                                             [None] * len(ref_texts), what=("similarity", "tags")).items()
               if k not in ("n", "fad", "fad_inf")})
    gt["n"] = len(ref_items)
    gt["fad_note"] = f"FAD between random halves of the reference set ({len(half_a)} vs {len(half_b)} clips)"
    results = {"ground truth": {"kind": "reference", **gt}, **results}

    # Per-item view of the first generated system (for the report).
    items = []
    s0 = results[first]
    paired_pos = {i: k for k, i in enumerate(i for i, it in enumerate(gen_items) if it.text in by_text)}
    for i, it in enumerate(gen_items):
        row = {"id": it.id, "text": it.text, "audio": it.audio}
        if i in paired_pos:
            j = by_text[it.text][0]
            row["reference"] = {"id": ref_items[j].id, "audio": ref_items[j].audio}
        for n, e in embedders.items():
            if e.has_text:
                row[f"{n}_text"] = s0[f"{n}_text"]["per_item"][i]
                if f"{n}_audio" in s0 and i in paired_pos:
                    row[f"{n}_audio"] = s0[f"{n}_audio"]["per_item"][paired_pos[i]]
            if e.tag_names:
                sc = outs[first][n][i]["tags"].mean(0)
                rank = np.empty(len(sc), int)
                rank[np.argsort(-sc)] = np.arange(1, len(sc) + 1)
                row[f"{n}_top_tags"] = [[e.tag_names[j], float(sc[j])] for j in np.argsort(-sc)[:5]]
                row[f"{n}_prompted_tags"] = [[lab, float(sc[e.tag_names.index(lab)]), int(rank[e.tag_names.index(lab)])]
                                             for lab in metrics.prompted_tags(it.text, e.tag_names)]
        items.append(row)

    report = {"title": a.title, "generated": os.path.abspath(a.generated), "reference": os.path.abspath(a.reference),
              "segment_seconds": a.segment_seconds, "embedders": {n: dataclasses.asdict(e.info) for n, e in embedders.items()},
              "systems": results, "items": items, "primary": first,
              "cache": {"dir": cache.root, "hits": cache.hits, "misses": cache.misses},
              "seconds": round(time.time() - t_start, 1)}
    with open(os.path.join(a.out, "metrics.json.tmp"), "w") as f:
        json.dump(report, f, indent=1)
    os.replace(os.path.join(a.out, "metrics.json.tmp"), os.path.join(a.out, "metrics.json"))
    report["html"] = report_lib.write_html(report, os.path.join(a.out, "report.html"), audio_format=a.report_audio,
                                           segment_seconds=a.segment_seconds)
    return report


def summary(report: dict) -> dict:
    out = {"out": os.path.dirname(report["html"]), "html": report["html"], "seconds": report["seconds"],
           "cache_hits": report["cache"]["hits"], "cache_misses": report["cache"]["misses"]}
    for s, r in report["systems"].items():
        key = s.replace(" ", "_")
        for n, f in r["fad"].items():
            out[f"{key}/fad_{n}"] = None if f.get("fad") is None else round(f["fad"], 4)
            out[f"{key}/fad_{n}_n"] = [f.get("n_generated"), f.get("n_real")]
        for n, f in r.get("fad_inf", {}).items():
            out[f"{key}/fad_inf_{n}"] = round(f["fad_inf"], 4)
        for k, v in r.items():
            if k.endswith("_text") or k.endswith("_audio"):
                out[f"{key}/{k}_sim"] = round(v["matched"], 4)
                out[f"{key}/{k}_sim_shuffled"] = None if v["shuffled"] is None else round(v["shuffled"], 4)
            if k.endswith("_tags"):
                out[f"{key}/{k}_auc"] = None if v["mean_auc"] is None else round(v["mean_auc"], 4)
                out[f"{key}/{k}_auc_shuffled"] = v.get("shuffled_mean_auc") and round(v["shuffled_mean_auc"], 4)
    return out


