"""Precomputed text-encoder embeddings, one row per distinct training text (docs/PAPERS.md §2.2).

The paper precomputes the frozen T5 encoder's outputs for its captions instead of running T5 in
every train step.  A store is built once per (stage config, task, corpus) by
`python -m noise2music.embed_texts`, and then read by the task's `lookup` preprocessor; the
Noise2Music model takes the rows as `text_embeddings` instead of encoding `text_tokens`
(`Noise2MusicModel.text_embeddings`, the macro TEXT_EMBEDDINGS).

    DIR/manifest.json      count, text_length, d_model, dtype, the vocabulary's file and sha256,
                           the encoder parameters' fingerprint, the task and corpus it was built for
    DIR/texts.jsonl        one JSON string per row
    DIR/tokens.npy         [N, L] int32, the task's tokens of each text (pieces + EOS, 0-padded)
    DIR/embeddings.npy     [N, L, D] (float16 or float32), the encoder's output on those tokens

The store is a local folder (its rows are memory-mapped; on a pod, one copy per host).  A store is
written into a temporary folder and renamed into place whole, so a reader sees the old
store or the new one.  What the task emits is checked against it per example: a text that is not in
the store, or whose tokens differ from the stored ones (another vocabulary or text length), stops
the input pipeline with a message naming the store and the text.  At a fresh start the model checks
the store's vocabulary and encoder fingerprint against its own (`check`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil

import numpy as np

MANIFEST = "manifest.json"
DTYPES = ("float16", "float32")


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write(out: str, texts: list[str], tokens: np.ndarray, embeddings: np.ndarray, manifest: dict) -> str:
    """Writes a store at `out` (replacing one there) from texts [N], tokens [N, L], embeddings [N, L, D]."""
    if "://" in out:
        raise ValueError(f"--out={out}: write the text-embedding store to a local folder, then copy it to each host")
    if not (len(texts) == len(tokens) == len(embeddings)):
        raise ValueError(f"{out}: {len(texts)} texts, {len(tokens)} token rows, {len(embeddings)} embedding rows")
    if len(set(texts)) != len(texts):
        raise ValueError(f"{out}: the texts are not distinct")
    dtype = manifest.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"text-embedding dtype {dtype!r}: one of {DTYPES}")
    with np.errstate(over="ignore"):   # an overflow is caught just below, naming the store
        emb = np.asarray(embeddings).astype(dtype)
    if not np.isfinite(emb).all():
        raise ValueError(f"{out}: the embeddings are not finite in {dtype} (choose float32)")
    out = os.path.abspath(out)
    tmp = out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with open(os.path.join(tmp, "texts.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(t, ensure_ascii=False) + "\n" for t in texts)
    np.save(os.path.join(tmp, "tokens.npy"), np.asarray(tokens, np.int32))
    np.save(os.path.join(tmp, "embeddings.npy"), emb)
    manifest = {**manifest, "count": len(texts), "text_length": int(emb.shape[1]), "d_model": int(emb.shape[2]),
                "dtype": dtype}
    with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    old = out.rstrip("/") + ".old"
    if os.path.exists(out):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


@dataclasses.dataclass
class Store:
    """An opened store: the manifest, texts and tokens in memory, the embeddings memory-mapped."""

    path: str
    manifest: dict
    texts: list[str]
    tokens: np.ndarray
    embeddings: np.ndarray

    @classmethod
    def open(cls, path: str) -> "Store":
        if "://" in path:
            raise ValueError(f"{path}: a text-embedding store is read memory-mapped from a local (or FUSE-mounted) "
                             f"folder; copy it to every host (`gsutil -m cp -r {path} /local/dir`) and name that")
        path = os.path.abspath(path)
        man = os.path.join(path, MANIFEST)
        if not os.path.exists(man):
            raise FileNotFoundError(f"{path}: no text-embedding store there ({MANIFEST} is missing); build it with "
                                    f"`python -m noise2music.embed_texts --gin_file=<the stage's config> --out={path}`")
        try:
            with open(man, encoding="utf-8") as f:
                manifest = json.load(f)
            with open(os.path.join(path, "texts.jsonl"), encoding="utf-8") as f:
                texts = [json.loads(line) for line in f]
            tokens = np.load(os.path.join(path, "tokens.npy"))
            emb = np.load(os.path.join(path, "embeddings.npy"), mmap_mode="r")
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: the text-embedding store is unreadable ({type(e).__name__}: {e}); "
                             f"rebuild it with `python -m noise2music.embed_texts`") from e
        n = manifest.get("count")
        if not (n == len(texts) == len(tokens) == len(emb)) or emb.shape[1:] != (manifest["text_length"],
                                                                                manifest["d_model"]):
            raise ValueError(f"{path}: the store's files disagree (manifest count {n}, {len(texts)} texts, tokens "
                             f"{tokens.shape}, embeddings {emb.shape}); rebuild it")
        return cls(path, manifest, texts, tokens, emb)

    def check(self, *, text_length: int, d_model: int, vocabulary_file: str | None,
              fingerprint: dict[str, list[float]] | None = None, what: str = "") -> None:
        """Refuses a store built for another text length, encoder width, vocabulary or encoder
        parameters (`fingerprint`: `fingerprint()` of the encoder the model will keep)."""
        m, where = self.manifest, f"{what}: " if what else ""
        for key, want in (("text_length", text_length), ("d_model", d_model)):
            if m[key] != want:
                raise ValueError(f"{where}the text-embedding store {self.path} has {key}={m[key]}, the model {want}")
        if vocabulary_file and m.get("vocabulary_sha256") and file_sha256(vocabulary_file) != m["vocabulary_sha256"]:
            raise ValueError(f"{where}the text-embedding store {self.path} was tokenized with "
                             f"{m.get('vocabulary')!r}, not {vocabulary_file!r}: rebuild it")
        if fingerprint is not None and m.get("fingerprint") is not None:
            bad = [k for k in sorted(set(fingerprint) | set(m["fingerprint"]))
                   if k not in fingerprint or k not in m["fingerprint"]
                   or not np.allclose(fingerprint[k], m["fingerprint"][k], rtol=1e-4, atol=1e-6)]
            if bad:
                raise ValueError(f"{where}the text-embedding store {self.path} was built from other text-encoder "
                                 f"parameters ({len(bad)} of {len(fingerprint)} differ, e.g. {bad[0]}): build it "
                                 f"with this run's config and seed, or text checkpoint")


def fingerprint(params) -> dict[str, list[float]]:
    """Per parameter: [sum, sum of squares] in float32 (equal parameters give equal fingerprints up to
    the order of a sharded sum; `Store.check` compares them with a relative tolerance)."""
    import jax
    import jax.numpy as jnp

    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    stats = jax.jit(lambda xs: [jnp.stack([jnp.sum(x.astype(jnp.float32)), jnp.sum(jnp.square(x.astype(jnp.float32)))])
                                for x in xs])([x for _, x in flat])
    return {jax.tree_util.keystr(p): [float(v) for v in np.asarray(jax.device_get(s))] for (p, _), s in zip(flat, stats)}


def lookup(store_dir: str, key: str = "text", tokens_key: str = "text_tokens", out_key: str = "text_embeddings"):
    """seqio preprocessor (after the tokens' EOS): adds `out_key` [L, D] float32, the store's row of
    the example's `key`, after checking its `tokens_key` equal the stored tokens."""
    import tensorflow as tf

    def fn(dataset):
        store = Store.open(store_dir)
        length, width = store.embeddings.shape[1:]
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(store.texts, tf.string),
                                                tf.range(len(store.texts), dtype=tf.int64)), -1)
        stored_tokens = tf.constant(store.tokens, tf.int32)
        emb = store.embeddings
        missing = (f"a training text is not in the text-embedding store {store.path} (built for another task, "
                   f"corpus or pseudo-label folder?): rebuild it with `python -m noise2music.embed_texts`. The text:")
        differ = (f"the text-embedding store {store.path} holds other tokens for this text (another vocabulary or "
                  f"text length): rebuild it. The text:")

        def row_of(r):
            return np.asarray(emb[int(r)], np.float32)

        def look(ex):
            row = table.lookup(ex[key])
            with tf.control_dependencies([tf.debugging.Assert(row >= 0, [missing, ex[key]])]):
                want = tf.gather(stored_tokens, tf.maximum(row, 0))
            got = ex[tokens_key]
            n = tf.shape(got)[0]
            padded = tf.pad(got, [[0, tf.maximum(length - n, 0)]])[:length]
            ok = tf.reduce_all(tf.equal(padded, want)) & (n <= length)
            with tf.control_dependencies([tf.debugging.Assert(ok, [differ, ex[key]])]):
                vec = tf.numpy_function(row_of, [row], tf.float32, stateful=False)
            ex = dict(ex)
            ex[out_key] = tf.ensure_shape(vec, [length, width])
            return ex

        return dataset.map(look, num_parallel_calls=tf.data.AUTOTUNE)

    return fn
