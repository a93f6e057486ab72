"""Exact top-K caption matching and the inverse-frequency draw of pseudo-labelling (docs/PAPERS.md §3).

    index = BankIndex(bank_embeddings, dtype='float32')        # [N, D], L2-normalised, in memory once
    scores, ids = index.topk(clip_embeddings, k=10)              # exact, [Q, k] best first
    counts = selection_counts(ids, len(index))                   # one counting pass over the corpus
    picks = inverse_frequency_draw(ids, counts, k_prime=3, seed=s)  # [Q, k'] caption ids

Exact search, fast on a CPU host (XLA on the host CPU, beside whatever accelerator trains): one
jitted `lax.scan` over blocks of the (transposed, in-memory) bank; each block is one matmul, and
its top-k is found without sorting the block: the scores are cut into groups of `group` columns,
the k groups with the largest maxima are kept (they must hold the block's top k: any score
outside them lies below k larger group maxima), and only those k x group candidates are ranked.
A running top-k merges the blocks.  Equal scores may come back in either order ("ties aside").

Hubness: a few captions lie near most clips and take most selections (the README's audit).  With
`bias` (one number per bank row, added to its score) the index ranks by a corrected score; CSLS
(Conneau et al. 2018, "Word translation without parallel data") is `bias = -hubness(bank, clips) / 2`:
a caption's mean cosine to its k nearest clips, halved, taken off, so a clip is matched by
cos(x, y) - r(y) / 2 = (CSLS(x, y) + r(x)) / 2, the same order as CSLS (r(x) is constant per clip).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _cpu():
    return jax.local_devices(backend="cpu")[0]   # this process's (on a pod, each host searches its own)


def _block_candidates(q, xb, bb, off, k: int, group: int, n_valid=None):
    """One block's exact top-k: q [Q, D] f32, xb [D, B] (B % group == 0), bb [B] or None (the
    rows' bias) -> ([Q, k], [Q, k])."""
    nq, b = q.shape[0], xb.shape[1]
    s = q @ xb.astype(jnp.float32)                                            # [Q, B]
    if bb is not None:
        s = s + bb[None, :]
    if n_valid is not None:                                                   # the padded tail only
        s = jnp.where((off + jnp.arange(b))[None, :] < n_valid, s, -jnp.inf)
    g = s.reshape(nq, b // group, group)
    _, top_groups = jax.lax.top_k(g.max(axis=2), min(k, b // group))         # [Q, kg]
    cand = jnp.take_along_axis(g, top_groups[:, :, None], axis=1).reshape(nq, -1)
    v, j = jax.lax.top_k(cand, min(k, cand.shape[1]))
    return v, off + jnp.take_along_axis(top_groups, j // group, 1) * group + j % group


def _merge(v1, i1, v2, i2, k: int):
    v, j = jax.lax.top_k(jnp.concatenate([v1, v2], 1), k)
    return v, jnp.take_along_axis(jnp.concatenate([i1, i2], 1), j, 1)


@functools.partial(jax.jit, static_argnames=("k", "group", "block"))
def _search(q: jax.Array, main_t: jax.Array | None, tail_t: jax.Array | None, n_valid: jax.Array,
            k: int, group: int, block: int, main_bias=None, tail_bias=None):
    """Whole-bank exact top-k in one dispatch: a scan over the full blocks of `main_t`
    [nb, D, block] (no masking), then the padded `tail_t` [D, t] block (masked past `n_valid`);
    with the rows' bias `main_bias` [nb, block] and `tail_bias` [t] (None: no bias)."""
    nq = q.shape[0]
    best = (jnp.full((nq, k), -jnp.inf, jnp.float32), jnp.zeros((nq, k), jnp.int32))
    off = jnp.int32(0)
    if main_t is not None:
        def body(carry, blk):
            bv, bi, o = carry
            xb, bb = blk
            v, i = _block_candidates(q, xb, bb, o, k, group)
            bv, bi = _merge(bv, bi, v, i, k)
            return (bv, bi, o + block), None

        (bv, bi, off), _ = jax.lax.scan(body, (*best, off), (main_t, main_bias))   # [nb, D, block], [nb, block]
        best = (bv, bi)
    if tail_t is not None:
        v, i = _block_candidates(q, tail_t, tail_bias, off, k, group, n_valid)
        best = _merge(*best, v, i, k)
    return best


class BankIndex:
    """An in-memory caption-embedding bank with exact inner-product top-k search.

    Args:
      embeddings: [N, D] bank vectors (L2-normalised for cosine).
      dtype: 'float32' or 'bfloat16' storage (bfloat16 halves memory: 4M x 128 is 1 GiB; scores are
        computed in float32 from the stored values, so the search is exact for the stored bank).
      block: bank rows scored per matmul (a multiple of `group`).
      group: columns per group in the pruning step.
      query_block: queries per dispatch (a final short batch is padded, so shapes never change).
      bias: [N] added to each row's score (float32; e.g. CSLS's `-hubness(...) / 2`); the scores
        `topk` returns include it.
    """

    def __init__(self, embeddings: np.ndarray, dtype: str = "float32", block: int = 65536, group: int = 64,
                 query_block: int = 1024, bias: np.ndarray | None = None):
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"BankIndex dtype={dtype!r}: use 'float32' or 'bfloat16'.")
        emb = np.asarray(embeddings)
        if emb.ndim != 2 or not len(emb):
            raise ValueError(f"BankIndex: the bank must be a non-empty [N, D] array, got shape {emb.shape}.")
        self.n, self.dim = emb.shape
        self.group = group
        self.block = max(group, min(block, -(-self.n // group) * group) // group * group)
        self.query_block = query_block
        store = np.float32 if dtype == "float32" else jnp.bfloat16
        n_main = self.n // self.block * self.block
        tail = self.n - n_main
        # Stored pre-blocked, [blocks, D, block]: the scan slices it without a transposed copy, and
        # the CPU client adopts this one numpy buffer as is.
        self._main_t = None
        if n_main:
            blocked = np.empty((n_main // self.block, self.dim, self.block), store)
            for j in range(len(blocked)):
                blocked[j] = emb[j * self.block:(j + 1) * self.block].T
            self._main_t = jax.device_put(blocked, _cpu())
        self._tail_t = None
        if tail:
            t = np.zeros((self.dim, -(-tail // group) * group), store)
            t[:, :tail] = emb[n_main:].T
            self._tail_t = jax.device_put(t, _cpu())
        self._main_bias = self._tail_bias = None
        if bias is not None:
            bias = np.asarray(bias, np.float32)
            if bias.shape != (self.n,) or not np.isfinite(bias).all():
                raise ValueError(f"BankIndex: bias must be [{self.n}] finite numbers (one per bank row), got "
                                 f"shape {bias.shape}")
            if n_main:
                self._main_bias = jax.device_put(bias[:n_main].reshape(-1, self.block), _cpu())
            if tail:
                self._tail_bias = jax.device_put(np.pad(bias[n_main:], (0, self._tail_t.shape[1] - tail)), _cpu())
        self.dtype = dtype

    def __len__(self) -> int:
        return self.n

    @property
    def nbytes(self) -> int:
        return int(sum(x.size * x.dtype.itemsize for x in (self._main_t, self._tail_t) if x is not None))

    def topk(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """queries [Q, D] -> (scores [Q, k] float32, ids [Q, k] int64), best first."""
        q = np.asarray(queries, np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"BankIndex.topk: queries must be [Q, {self.dim}], got {q.shape}.")
        if not 0 < k <= self.n:
            raise ValueError(f"BankIndex.topk: k={k} must be in [1, {self.n}] (the bank size).")
        qb = min(self.query_block, len(q)) or 1
        vs, ids = [], []
        for s in range(0, len(q), qb):
            chunk = q[s:s + qb]
            m = len(chunk)
            if m < qb:
                chunk = np.concatenate([chunk, np.zeros((qb - m, self.dim), np.float32)])
            v, i = _search(jax.device_put(chunk, _cpu()), self._main_t, self._tail_t, jnp.int32(self.n), k,
                           self.group, self.block, self._main_bias, self._tail_bias)
            vs.append(np.asarray(v)[:m])
            ids.append(np.asarray(i)[:m])
        return np.concatenate(vs), np.concatenate(ids).astype(np.int64)


def hubness(bank: np.ndarray, clips: np.ndarray, k: int = 10, dtype: str = "float32") -> np.ndarray:
    """Each bank row's mean cosine to its `k` nearest clips, [N] float32: CSLS's r(y) (module doc)."""
    scores, _ = BankIndex(clips, dtype=dtype).topk(np.asarray(bank, np.float32), min(k, len(clips)))
    return scores.mean(1).astype(np.float32)


def brute_force_topk(queries: np.ndarray, bank: np.ndarray, k: int, bias: np.ndarray | None = None):
    """The reference: full scores (+ `bias` per bank row), stable sort (ties -> lower index)."""
    s = np.asarray(queries, np.float32) @ np.asarray(bank, np.float32).T
    if bias is not None:
        s = s + np.asarray(bias, np.float32)[None, :]
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), order


def selection_counts(ids: np.ndarray, bank_size: int) -> np.ndarray:
    """How often each caption is in some clip's top-k: [bank_size] int64."""
    return np.bincount(np.asarray(ids).ravel(), minlength=bank_size).astype(np.int64)


def inverse_frequency_draw(ids: np.ndarray, counts: np.ndarray, k_prime: int, seed, row_keys=None) -> np.ndarray:
    """For each row of `ids` [Q, K], K' of its K captions without replacement, each draw with
    probability proportional to 1 / counts[caption] among those not yet drawn (successive
    sampling, as `numpy.random.Generator.choice(replace=False, p=...)` defines it).

    Implemented with the Gumbel-top-k identity (the K' largest log w + Gumbel noise are such a
    draw).  `seed`: anything `numpy.random.default_rng` accepts; the draw is a pure function of it.
    `row_keys` ([Q] non-negative ints, e.g. hashed clip ids): each row's noise then comes from
    `default_rng([seed, key])`, so a clip's draw does not depend on which batch it came in.
    """
    ids = np.asarray(ids)
    if not 0 < k_prime <= ids.shape[1]:
        raise ValueError(f"k_prime={k_prime} must be in [1, K={ids.shape[1]}].")
    c = np.asarray(counts)[ids].astype(np.float64)
    if np.any(c <= 0):
        raise ValueError("inverse_frequency_draw: a caption in `ids` has count 0 (counts from another top-k?).")
    if row_keys is None:
        g = np.random.default_rng(seed).gumbel(size=ids.shape)
    else:
        g = np.stack([np.random.default_rng([int(seed), int(k)]).gumbel(size=ids.shape[1]) for k in row_keys])
    order = np.argsort(-(-np.log(c) + g), axis=1, kind="stable")[:, :k_prime]
    return np.take_along_axis(ids, order, 1)
