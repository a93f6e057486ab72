"""FAD, FAD-infinity, paired similarity and tag agreement (music_eval/metrics.py) on controlled
embeddings: exact values where they are known, and an independent computation with scipy."""
import numpy as np
import pytest
import scipy.linalg

from common import ranking
from music_eval import metrics
from music_eval.embedders.musicnn import MTT_LABELS


def _fad_scipy(x, y):
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean.real))


def _correlated(rng, n, d, scale=1.0):
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    return (rng.standard_normal((n, d)) @ a) * scale


def test_fad_of_a_set_against_itself_is_zero_and_reports_counts():
    rng = np.random.default_rng(0)
    x = _correlated(rng, 400, 24)
    r = metrics.fad(x, x)
    assert r["fad"] == pytest.approx(0.0, abs=1e-9)
    assert (r["n_real"], r["n_generated"], r["dim"]) == (400, 400, 24) and "warning" not in r
    # Rank-deficient (fewer samples than dimensions): still exactly 0 against itself, finite and real.
    few = _correlated(rng, 20, 64)
    r = metrics.fad(few, few)
    assert r["fad"] == pytest.approx(0.0, abs=1e-9) and "rank-deficient" in r["warning"]


def test_fad_grows_with_a_controlled_shift_and_equals_the_mean_term_for_a_pure_shift():
    rng = np.random.default_rng(1)
    x = _correlated(rng, 500, 16)
    # The same samples shifted: the covariances are identical, so FAD = ||shift||^2 exactly.
    for s in (0.1, 0.5, 2.0):
        shift = np.full(16, s)
        assert metrics.fad(x, x + shift)["fad"] == pytest.approx(16 * s * s, rel=1e-9)
    y = _correlated(np.random.default_rng(2), 500, 16)  # a second draw of the same kind of data
    vals = [metrics.fad(x, y * (1 + k) + k)["fad"] for k in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(vals, vals[1:])), vals


def test_fad_matches_scipy_sqrtm_on_the_same_embeddings():
    rng = np.random.default_rng(3)
    for n, d, scale in [(300, 8, 1.0), (600, 32, 3.0), (2000, 128, 0.1)]:
        x, y = _correlated(rng, n, d), _correlated(rng, n, d, scale) + 0.3
        assert metrics.fad(x, y)["fad"] == pytest.approx(_fad_scipy(x, y), rel=1e-6, abs=1e-9)
    # The trace term alone, on covariances with a wide eigenvalue range.
    s1 = np.cov(_correlated(rng, 1000, 20) * np.logspace(-3, 2, 20), rowvar=False)
    s2 = np.cov(_correlated(rng, 1000, 20), rowvar=False)
    assert metrics.trace_sqrt_product(s1, s2) == pytest.approx(np.trace(scipy.linalg.sqrtm(s1 @ s2)).real, rel=1e-6)


def test_fad_infinity_removes_the_small_sample_bias():
    rng = np.random.default_rng(4)
    real = _correlated(rng, 4000, 16)
    a = rng.standard_normal((16, 16)) / 4.0
    gen = rng.standard_normal((400, 16)) @ a  # a different covariance: the true FAD is > 0
    r = metrics.fad_infinity(real, gen, num_points=10, seed=0)
    big = np.random.default_rng(5).standard_normal((200000, 16)) @ a
    truth = metrics.fad(real, big)["fad"]
    full = metrics.fad(real, gen)["fad"]
    assert r["slope"] > 0 and len(r["points"]) == 10 and r["points"][-1][0] == 400
    assert abs(r["fad_inf"] - truth) < abs(full - truth), (r["fad_inf"], full, truth)
    with pytest.raises(ValueError, match="at least 4"):
        metrics.fad_infinity(real, gen[:3])


def test_paired_similarity_and_its_shuffled_baseline():
    rng = np.random.default_rng(6)
    t = rng.standard_normal((10, 8))
    r = metrics.paired_similarity(t, t)
    assert r["matched"] == pytest.approx(1.0) and r["shuffled"] < 0.5 and r["n"] == 10
    # Pairs with the same group (the same prompt twice) are not counted as shuffled pairs.
    r = metrics.paired_similarity(np.array([[1.0, 0], [1, 0], [0, 1]]), np.array([[1.0, 0], [1, 0], [0, 1]]),
                                  groups=["a", "a", "b"])
    assert r["shuffled"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="equal size"):
        metrics.paired_similarity(t, t[:3])


def test_tag_agreement_finds_the_prompted_tag_and_chance_when_shuffled():
    assert metrics.prompted_tags("A slow solo piano piece", MTT_LABELS) == ["slow", "piano", "solo"]
    assert metrics.prompted_tags("a hymn at about 88 beats per minute", MTT_LABELS) == []  # tempo, not "beats"
    assert metrics.prompted_tags("string quartet with no vocals", MTT_LABELS) == ["classical", "strings", "no vocals"]
    prompts = ["solo piano", "a piano ballad", "string quartet", "drums and bass", "choir and organ", "flute duet"] * 5
    rng = np.random.default_rng(7)
    scores = rng.uniform(0, 0.2, (len(prompts), len(MTT_LABELS)))
    for i, p in enumerate(prompts):
        for lab in metrics.prompted_tags(p, MTT_LABELS):
            scores[i, MTT_LABELS.index(lab)] += 0.5
    r = metrics.tag_agreement(scores, prompts, MTT_LABELS)
    assert r["mean_auc"] == pytest.approx(1.0) and r["tags"]["piano"]["positives"] == 10
    assert r["prompts_naming_a_tag"] == len(prompts)
    shuffled = [metrics.tag_agreement(scores, prompts, MTT_LABELS, permutation=rng.permutation(len(prompts)))["mean_auc"]
                for _ in range(20)]
    assert 0.35 < np.mean(shuffled) < 0.65
    assert ranking.roc_auc_of(np.array([1.0, 1.0]), np.array([1.0])) == 0.5  # ties count half
