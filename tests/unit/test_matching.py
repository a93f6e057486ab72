"""Exact top-K caption matching and the inverse-frequency draw (pseudo-labelling, docs/PAPERS.md §3)."""
import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from data.matching import BankIndex, brute_force_topk, inverse_frequency_draw, selection_counts


def _unit(rng, n, d=128):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("n,block,dtype", [(5000, 1024, "float32"), (4097, 512, "float32"), (37, 4096, "float32"),
                                           (3000, 1024, "bfloat16")])
def test_topk_is_exact_against_brute_force(n, block, dtype):
    rng = np.random.default_rng(n)
    bank, queries = _unit(rng, n), _unit(rng, 300)
    idx = BankIndex(bank, dtype=dtype, block=block, group=64, query_block=128)
    v, i = idx.topk(queries, k=10)
    stored = bank if dtype == "float32" else np.asarray(jnp.asarray(bank, jnp.bfloat16).astype(jnp.float32))
    rv, ri = brute_force_topk(queries, stored, 10)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_allclose(v, rv, atol=1e-5)
    per = 128 * (4 if dtype == "float32" else 2)
    assert n * per <= idx.nbytes < (n + 64) * per  # the bank once, padded to a whole group


def test_topk_with_all_negative_scores_never_returns_padding():
    rng = np.random.default_rng(1)
    q = _unit(rng, 4)
    bank = -np.repeat(q[:1], 70, axis=0) + 0.01 * _unit(rng, 70)   # every score near -1 for query 0
    v, i = BankIndex(bank, block=64, group=64).topk(q, k=5)
    assert np.all(i < 70) and np.all(np.isfinite(v))
    np.testing.assert_array_equal(i, brute_force_topk(q, bank, 5)[1])
    with pytest.raises(ValueError, match="k=71"):
        BankIndex(bank).topk(q, k=71)


@pytest.mark.parametrize("n,block", [(5000, 1024), (37, 4096)])
def test_biased_topk_ranks_by_score_plus_bias_and_csls_demotes_hubs(n, block):
    from data.matching import hubness

    rng = np.random.default_rng(7)
    bank, clips = _unit(rng, n), _unit(rng, 300)
    bias = rng.normal(scale=0.05, size=n).astype(np.float32)
    v, i = BankIndex(bank, block=block, group=64, query_block=128, bias=bias).topk(clips, k=10)
    rv, ri = brute_force_topk(clips, bank, 10, bias=bias)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_allclose(v, rv, atol=1e-5)
    # A hub: caption u is at cosine 0.77 to every clip, each clip's own caption e_i at 0.63 to it
    # and 0 to the others.  By cosine u is every clip's best match; CSLS's penalty (a caption's
    # mean cosine to its 10 nearest clips, halved: 0.39 for u, 0.03 for e_i) gives each clip its own.
    eye = np.eye(128, dtype=np.float32)
    own, u = eye[:100], eye[127]
    clips = np.sqrt(0.6) * u + np.sqrt(0.4) * own
    hub_bank = np.concatenate([own, u[None]])
    r = hubness(hub_bank, clips, k=10)
    np.testing.assert_allclose(r, np.sort(hub_bank @ clips.T, axis=1)[:, -10:].mean(1), atol=1e-6)
    assert (BankIndex(hub_bank).topk(clips, k=1)[1][:, 0] == 100).all()
    np.testing.assert_array_equal(BankIndex(hub_bank, bias=-r / 2).topk(clips, k=1)[1][:, 0], np.arange(100))
    with pytest.raises(ValueError, match="bias must be"):
        BankIndex(bank, bias=bias[:-1])


def _inclusion_probabilities(w, k_prime):
    """Exact marginal inclusion probabilities of successive sampling without replacement."""
    p = np.zeros(len(w))
    for order in itertools.permutations(range(len(w)), k_prime):
        prob, left = 1.0, w.sum()
        for j in order:
            prob *= w[j] / left
            left -= w[j]
        p[list(order)] += prob
    return p


def test_inverse_frequency_draw_matches_its_definition():
    counts = np.array([1, 2, 4, 8, 16, 3])
    ids = np.tile(np.arange(6), (200_000, 1))
    picks = inverse_frequency_draw(ids, counts, k_prime=3, seed=1234)
    assert picks.shape == (200_000, 3)
    assert all(len(set(r)) == 3 for r in picks[:1000])                  # without replacement
    freq = np.bincount(picks.ravel(), minlength=6) / len(picks)
    want = _inclusion_probabilities(1.0 / counts, 3)
    sigma = np.sqrt(want * (1 - want) / len(picks))
    assert np.all(np.abs(freq - want) < 5 * sigma), (freq, want)
    # The first pick alone is the plain inverse-frequency distribution.
    first = np.bincount(picks[:, 0], minlength=6) / len(picks)
    p1 = (1 / counts) / (1 / counts).sum()
    assert np.all(np.abs(first - p1) < 5 * np.sqrt(p1 * (1 - p1) / len(picks)))
    # Deterministic for a seed.
    np.testing.assert_array_equal(picks[:50], inverse_frequency_draw(ids[:50], counts, 3, seed=1234)[:50])


def test_selection_counts_and_bad_draws():
    ids = np.array([[0, 1, 2], [2, 3, 0]])
    np.testing.assert_array_equal(selection_counts(ids, 5), [2, 1, 2, 1, 0])
    with pytest.raises(ValueError, match="k_prime=4"):
        inverse_frequency_draw(ids, selection_counts(ids, 5), 4, seed=0)
    with pytest.raises(ValueError, match="count 0"):
        inverse_frequency_draw(np.array([[4, 0]]), selection_counts(ids, 5), 1, seed=0)
