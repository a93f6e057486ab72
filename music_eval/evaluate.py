"""`python -m noise2music.evaluate --generated=SAMPLES --reference=REF --out=DIR [--mulan=RUN]`.

Scores generated music the way the paper does (SPEC.md §4) and writes a report a person can read.

    --generated   a `noise2music.sample` output folder (its settings.json names the prompts and
                  files; the 16 kHz WAVs are scored), or a JSON-lines manifest {"audio", "text"[, "id"]}
                  (relative audio paths are relative to the manifest), or a folder with one as
                  manifest.jsonl (audio from any other model)
    --reference   real audio: a JSON-lines manifest {"audio", "text"[, "id"]} or a `data.eval_set`
                  folder (its reference.jsonl: the corpus's held-out split with a caption per clip)
    --mulan       a trained MuLan run: adds the MuLan embedder (FAD, text and audio similarity)
    --embedders   comma-separated (default: musicnn, plus mulan with --mulan); see noise2music/embedders.py
    --compare     NAME=SAMPLES, repeatable: more systems scored beside --generated (an untrained model...)

Every clip is scored on its middle `--segment_seconds` (10 s, as the paper scores 30 s
generations; a shorter clip is scored whole).  Systems, each a row of the report:
- the generated set, and every --compare set;
- "white noise": Gaussian noise with each generated clip's length and RMS (a floor any model must beat);
- "ground truth": the reference audio itself, against its own texts; its FAD is between two random
  halves of the reference set (the FAD real audio gets at that sample count).
Metrics, per embedder (FAD counts are embeddings: musicnn gives one per 3 s patch, MuLan one per clip):
- FAD against the whole reference set, with both counts, and FAD-infinity with --fad_inf;
- MuLan similarity of each clip to its prompt's text, and to the reference audio whose text is the
  prompt; beside each, the shuffled-pair baseline (every mismatched pair);
- musicnn tag agreement: per MagnaTagATune tag that prompts name ("piano", "strings", "choir"...),
  the ROC-AUC of that tag's score between clips prompted with it and the rest; shuffled baseline.

Outputs in --out: metrics.json (everything, per item too), report.html (self-contained: the table,
then per prompt the players, spectrograms and scores), and the embedding cache (--cache_dir,
default OUT/cache: a re-run only embeds audio it has not seen).  Exit status 2 for bad input (the
file or flag is named).  The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time

import numpy as np

log = logging.getLogger("noise2music.evaluate")


RESERVED = ("ground truth", "white noise")  # the baselines' rows


class EvalInputError(ValueError):
    """Bad input; the message names the file or flag."""


@dataclasses.dataclass
class Item:
    id: str
    audio: str
    text: str


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------

def _read_manifest(path: str, flag: str) -> list[Item]:
    base = os.path.dirname(os.path.abspath(path))
    items = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                audio, text = r["audio"], str(r.get("text") or "")
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise EvalInputError(f"{flag}={path} line {n}: need a JSON object with 'audio' (and 'text'): {e}")
            if isinstance(audio, dict):  # a corpus manifest row: {"16000": "audio/x.wav"}
                audio = audio.get("16000") or next(iter(audio.values()))
            items.append(Item(str(r.get("id", r.get("clip_id", n))), os.path.join(base, audio), text))
    if not items:
        raise EvalInputError(f"{flag}={path}: no items")
    return items


def read_generated(path: str, suffix: str = "_16k.wav", flag: str = "--generated") -> list[Item]:
    """A sampler output folder (settings.json) or a manifest."""
    if os.path.isdir(path):
        settings = os.path.join(path, "settings.json")
        if not os.path.exists(settings) and os.path.exists(os.path.join(path, "manifest.jsonl")):
            return _read_manifest(os.path.join(path, "manifest.jsonl"), flag)
        if not os.path.exists(settings):
            raise EvalInputError(f"{flag}={path}: a folder without settings.json (a noise2music.sample output) or "
                                 f"manifest.jsonl; give a JSON-lines manifest of {{\"audio\", \"text\"}} instead")
        with open(settings) as f:
            s = json.load(f)
        items = []
        for k, smp in enumerate(s.get("samples", [])):
            files = [x for x in smp.get("files", []) if x.endswith(suffix)]
            if not files:
                continue
            items.append(Item(f"{smp.get('prompt_index', k) + 1:03d}_seed{smp.get('seed', 0)}",
                              os.path.join(path, files[0]), smp["prompt"]))
        if not items:
            raise EvalInputError(f"{flag}={path}: settings.json lists no *{suffix} files (status: {s.get('status')})")
        return items
    if not os.path.exists(path):
        raise EvalInputError(f"{flag}={path}: no such file or folder")
    return _read_manifest(path, flag)


def read_reference(path: str) -> list[Item]:
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "reference.jsonl")):
            return _read_manifest(os.path.join(path, "reference.jsonl"), "--reference")
        raise EvalInputError(f"--reference={path}: a folder without reference.jsonl (make one with data.eval_set)")
    if not os.path.exists(path):
        raise EvalInputError(f"--reference={path}: no such file or folder")
    return _read_manifest(path, "--reference")


def load_segments(items: list[Item], rate: int, seconds: float) -> list[np.ndarray]:
    from data.audio import AudioError, load_audio, middle

    out = []
    for it in items:
        try:
            x, _ = load_audio(it.audio, rate, allow_silent=True)
        except AudioError as e:
            raise EvalInputError(f"audio of item {it.id!r}: {e}") from None
        out.append(middle(x, int(round(seconds * rate))))
    return out


def white_noise(like: list[np.ndarray], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for x in like:
        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) or 0.1
        out.append(np.clip(rng.standard_normal(len(x)) * rms, -1, 1).astype(np.float32))
    return out


# ----------------------------------------------------------------------------------------------
# Embedding, with a cache keyed by the embedder's fingerprint and the audio's content
# ----------------------------------------------------------------------------------------------

class EmbeddingCache:
    def __init__(self, root: str | None):
        self.root = root
        self.hits = self.misses = 0

    def _path(self, emb, wave: np.ndarray) -> str:
        h = hashlib.sha1(np.ascontiguousarray(wave, np.float32).tobytes()).hexdigest()
        return os.path.join(self.root, emb.info.fingerprint, h[:2], h + ".npz")

    def embed(self, emb, waves: list[np.ndarray], label: str, chunk: int = 16) -> list[dict]:
        out: list[dict | None] = [None] * len(waves)
        todo = []
        for i, w in enumerate(waves):
            p = self._path(emb, w) if self.root else None
            if p and os.path.exists(p):
                try:
                    with np.load(p) as z:
                        out[i] = {k: z[k] for k in z.files}
                    self.hits += 1
                    continue
                except Exception:  # a torn cache file: embed again
                    pass
            todo.append(i)
        self.misses += len(todo)
        t0 = time.time()
        for s in range(0, len(todo), chunk):
            idx = todo[s:s + chunk]
            for i, res in zip(idx, emb.embed_many([waves[i] for i in idx])):
                out[i] = res
                if self.root:
                    p = self._path(emb, waves[i])
                    os.makedirs(os.path.dirname(p), exist_ok=True)
                    np.savez(p + ".tmp.npz", **res)
                    os.replace(p + ".tmp.npz", p)
            log.info("%s: %s %d/%d clips embedded (%d cached) %.0fs", emb.info.name, label,
                     min(s + chunk, len(todo)), len(todo), len(waves) - len(todo), time.time() - t0)
        return out


# ----------------------------------------------------------------------------------------------
# Metrics of one system
# ----------------------------------------------------------------------------------------------

def _clip_level(outs: list[dict], key: str = "embeddings") -> np.ndarray:
    return np.stack([o[key].mean(0) for o in outs])


def score_system(outs: dict[str, list[dict]], texts: list[str], ref: dict, embedders: dict, a,
                 ref_index: list[list[int] | None], fad_real: dict | None = None,
                 what: tuple[str, ...] = ("fad", "similarity", "tags")) -> dict:
    """outs: embedder name -> per-clip outputs; ref: the reference set's outputs and clip embeddings;
    ref_index: per clip, the reference clips whose text is its prompt (or None); fad_real: the real
    embeddings FAD compares with (default: the whole reference set)."""
    from noise2music import metrics

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


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--generated", required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mulan", default=None, help="a trained MuLan run (model dir)")
    ap.add_argument("--embedders", default=None, help="comma-separated; default musicnn (+ mulan with --mulan)")
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=SAMPLES")
    ap.add_argument("--name", default=None, help="the generated system's name in the report")
    ap.add_argument("--segment_seconds", type=float, default=10.0)
    ap.add_argument("--no_noise_baseline", action="store_true")
    ap.add_argument("--fad_inf", action="store_true", help="also FAD-infinity (FAD on subsets, extrapolated)")
    ap.add_argument("--fad_inf_points", type=int, default=15)
    ap.add_argument("--cache_dir", default=None, help="embedding cache (default OUT/cache; 'none' disables)")
    ap.add_argument("--generated_suffix", default="_16k.wav")
    ap.add_argument("--report_audio", choices=["ogg", "wav", "none"], default="ogg")
    ap.add_argument("--title", default="Noise2Music evaluation")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def run(a) -> dict:
    from noise2music import embedders as emb_lib

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
    from noise2music import metrics

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
    from noise2music import report as report_lib

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


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(name)s] %(message)s",
                        datefmt="%H:%M:%S")
    a = parse_args(argv)
    try:
        report = run(a)
    except EvalInputError as e:
        print(f"[evaluate] error: {e}", file=sys.stderr)
        sys.exit(2)
    from noise2music import report as report_lib

    print(report_lib.text_table(report), file=sys.stderr)
    print(f"\n[evaluate] metrics: {os.path.join(a.out, 'metrics.json')}\n[evaluate] report:  {report['html']}",
          file=sys.stderr)
    s = summary(report)
    print(json.dumps(s), flush=True)
    return s


if __name__ == "__main__":
    main()
