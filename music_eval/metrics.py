"""Metrics of generated music (docs/PAPERS.md §4): FAD, FAD-infinity, MuLan similarity, tag agreement.

    fad(real_emb, gen_emb)                     # {'fad', 'n_real', 'n_generated', 'dim', 'warning'?}
    fad_infinity(real_emb, gen_emb)            # {'fad_inf', 'slope', 'points': [(n, fad), ...]}
    paired_similarity(a, b)                    # mean cosine of matched rows, and of shuffled pairs
    tag_agreement(scores, prompts, labels)     # per-tag ROC-AUC of the tagger's score for prompted tags

Everything is numpy, float64 inside.  FAD's matrix square root: for symmetric PSD covariances,
Tr((S_r S_g)^1/2) = sum sqrt(eig(R S_g R)) with R = S_r^1/2 (the eigenvalues of S_r S_g and of
the symmetric R S_g R are the same); both square roots come from `eigh` of symmetric matrices with
tiny negative round-off eigenvalues clipped to zero.  This stays real and well-defined for
rank-deficient covariances (fewer samples than dimensions), where scipy's `sqrtm` of the
non-symmetric product is unstable and returns complex parts; `tests/test_metrics.py` checks it against `scipy.linalg.sqrtm` where
that is well-posed.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from common.ranking import roc_auc_of


def gaussian(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, D] -> (mean [D], unbiased covariance [D, D]); needs N >= 2."""
    x = np.asarray(emb, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"FAD needs at least 2 embeddings of shape [N, D], got {x.shape}")
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr((s1 s2)^1/2) for symmetric PSD s1, s2."""
    r = _psd_sqrt(s1)
    m = r @ s2 @ r
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(mu1, s1, mu2, s2) -> float:
    """||mu1 - mu2||^2 + Tr(s1 + s2 - 2 (s1 s2)^1/2), clipped at 0 (round-off)."""
    d = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    val = float(d @ d + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))
    return max(val, 0.0)


def fad(real: np.ndarray, generated: np.ndarray) -> dict:
    """The Frechet audio distance between two embedding sets, with the counts it depends on."""
    mu_r, s_r = gaussian(real)
    mu_g, s_g = gaussian(generated)
    out = {"fad": frechet_distance(mu_r, s_r, mu_g, s_g), "n_real": int(len(real)),
           "n_generated": int(len(generated)), "dim": int(np.shape(real)[1])}
    if min(len(real), len(generated)) <= out["dim"]:
        out["warning"] = (f"fewer embeddings ({min(len(real), len(generated))}) than dimensions ({out['dim']}): "
                          f"the covariance is rank-deficient and FAD is strongly biased upwards; compare only "
                          f"at equal counts")
    return out


def fad_infinity(real: np.ndarray, generated: np.ndarray, num_points: int = 15, min_fraction: float = 0.2,
                 seed: int = 0) -> dict:
    """FAD extrapolated to infinitely many generated samples (Chung & Kim's FID-infinity, applied
    to audio by Gui et al. 2024): FAD on random subsets of N generated embeddings, for N from
    `min_fraction` of the set to all of it, fitted by a line in 1/N; the intercept is FAD-inf."""
    g = np.asarray(generated, np.float64)
    n = len(g)
    lo = max(2, int(round(min_fraction * n)))
    if n < 4 or lo >= n:
        raise ValueError(f"FAD-infinity needs at least 4 generated embeddings, got {n}")
    sizes = np.unique(np.linspace(lo, n, num_points).round().astype(int))
    rng = np.random.default_rng(seed)
    mu_r, s_r = gaussian(real)
    pts = []
    for k in sizes:
        sub = g[rng.permutation(n)[:k]]
        mu_g, s_g = gaussian(sub)
        pts.append((int(k), frechet_distance(mu_r, s_r, mu_g, s_g)))
    x = np.array([1.0 / k for k, _ in pts])
    y = np.array([v for _, v in pts])
    slope, intercept = np.polyfit(x, y, 1)
    return {"fad_inf": float(intercept), "slope": float(slope), "points": pts, "n_real": int(len(real))}


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def paired_similarity(a: np.ndarray, b: np.ndarray, groups: Sequence | None = None) -> dict:
    """Cosine of a[i] with b[i] (matched pairs) and, as the baseline, of a[i] with every b[j] whose
    group differs (shuffled pairs: all mismatched pairs, not one random permutation)."""
    a, b = _unit(a), _unit(b)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"paired_similarity: need two non-empty sets of equal size, got {len(a)} and {len(b)}")
    sim = a @ b.T
    matched = np.diag(sim)
    g = np.arange(len(a)) if groups is None else np.asarray(groups)
    off = g[:, None] != g[None, :]
    return {"matched": float(matched.mean()), "matched_std": float(matched.std()), "per_item": matched.tolist(),
            "shuffled": float(sim[off].mean()) if off.any() else None, "n": int(len(a))}


# ----------------------------------------------------------------------------------------------
# Tag agreement
# ----------------------------------------------------------------------------------------------

# Words of a prompt that name a tagger label (whole words, lower case); the label's own text always counts.
TAG_SYNONYMS = {
    "drums": ["drum", "drum kit", "percussion"], "strings": ["string quartet", "string ensemble", "string orchestra"],
    "violin": ["violins", "fiddle"], "guitar": ["guitars"], "synth": ["synthesizer", "synthesiser", "synth pad"],
    "choir": ["choral", "chorale"], "choral": ["choir", "chorale"], "flute": ["flutes", "recorder"],
    "piano": ["pianos", "electric piano"], "classical": ["baroque", "chorale", "string quartet"],
    "fast": ["upbeat", "lively", "very fast"], "slow": ["very slow"], "dance": ["dance music"],
    "techno": [], "electronic": ["electronica"],
}


def prompted_tags(prompt: str, labels: Sequence[str]) -> list[str]:
    """Labels a prompt names (by the label or a synonym, as whole words; 'no vocals' style labels
    only by their exact phrase)."""
    text = re.sub(r"\b(beats per minute|beats a minute|bpm)\b", " ", prompt.lower())  # a tempo, not "beats"
    text = " " + re.sub(r"[^a-z0-9]+", " ", text) + " "
    found = set()
    # Negated labels first ("no vocals"); then every negated word is removed, so that "no vocals"
    # and "without drums" do not also name "vocals" and "drums".
    for lab in (x for x in labels if x.lower().startswith("no ")):
        if f" {lab.lower()} " in text:
            found.add(lab)
    text = re.sub(r" (?:no|without) [a-z0-9]+", " ", text) + " "
    for lab in (x for x in labels if not x.lower().startswith("no ")):
        if any(f" {w} " in text for w in [lab.lower()] + TAG_SYNONYMS.get(lab.lower(), [])):
            found.add(lab)
    return [lab for lab in labels if lab in found]


def tag_agreement(scores: np.ndarray, prompts: Sequence[str], labels: Sequence[str], min_positives: int = 1,
                  permutation: np.ndarray | None = None) -> dict:
    """Does audio generated for "piano" score high on the tagger's piano tag?

    For every label that some prompts name and others do not, the ROC-AUC of the label's score
    (clip-level, [N, num_labels]) between the clips whose prompt names it and the rest; the
    summary is the mean AUC over those labels (0.5 = chance).  `permutation` re-pairs clips and
    prompts (the shuffled baseline)."""
    scores = np.asarray(scores, np.float64)
    if permutation is not None:
        prompts = [prompts[i] for i in permutation]
    named = [set(prompted_tags(p, labels)) for p in prompts]
    per_tag = {}
    for j, lab in enumerate(labels):
        pos = np.array([lab in s for s in named])
        if pos.sum() >= min_positives and (~pos).sum() >= 1:
            per_tag[lab] = {"auc": roc_auc_of(scores[pos, j], scores[~pos, j]), "positives": int(pos.sum()),
                            "mean_score_named": float(scores[pos, j].mean()),
                            "mean_score_other": float(scores[~pos, j].mean())}
    aucs = [v["auc"] for v in per_tag.values()]
    return {"mean_auc": float(np.mean(aucs)) if aucs else None, "tags": per_tag, "n": int(len(prompts)),
            "prompts_naming_a_tag": int(sum(bool(s) for s in named))}
