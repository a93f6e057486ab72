"""`python -m noise2music.embed_texts --gin_file=noise2music/STAGE.gin [--gin.NAME=VALUE ...] [--out=DIR]`.

Precomputes the frozen T5 encoder's output for every text the stage's task can draw (the paper's
way: docs/PAPERS.md §2.2), into a store (`data.text_embeddings`) that a run then reads with
`--gin.TEXT_EMBEDDINGS="'DIR'"`: its train step takes the stored rows instead of running T5.

The texts are the task's own (`data.tasks.text_options`: every weak text, or every pseudo-label
option a clip is given, as the task tokenizes them); the encoder is the one a fresh run of the same
config starts with: initialised from `train.random_seed`, with `Noise2MusicModel.text_checkpoint`
loaded when it is set.  A run whose encoder, vocabulary or text length differ is refused at its
start, naming the store.

    python -m noise2music.embed_texts --gin_file=noise2music/tiny_generator.gin --out=/tmp/t5_texts
    python -m noise2music.train --gin_file=noise2music/tiny_generator.gin \\
        --gin.TEXT_EMBEDDINGS="'/tmp/t5_texts'" --model_dir=/tmp/n2m_gen

Flags: --gin_file / --gin.NAME=VALUE as for training (the same config and task bindings as the run);
--out=DIR (default: the config's TEXT_EMBEDDINGS); --split=train; --batch_size=N texts per encoder
call (default 64); --dtype=float32|float16 of the stored rows (float16 halves the store).  One
process (the texts are few beside the clips).  The last line of stdout is one JSON object
(`out`, `texts`, `options_seen`, `seconds`, ...).
"""
from __future__ import annotations

import importlib
import sys
import time

from common import cli
from common.errors import ConfigError

USAGE = __doc__


def embed_texts(out: str, split: str = "train", batch_size: int = 64, dtype: str = "float32") -> dict:
    import jax
    import numpy as np

    from data import tasks, text_embeddings
    from trainer import flags as flags_lib
    from trainer.partitioning import Partitioner
    from trainer.train_state import abstract_state

    t0 = time.time()
    model = flags_lib.bound("train.model")
    if not getattr(model, "has_text", False):
        raise ConfigError(f"train.model ({type(model).__name__}, stage {getattr(model, 'stage', '?')!r}) has no text "
                         f"encoder: nothing to precompute")
    data = flags_lib.bound("train.train_data")
    task, lengths = data.name, dict(data.task_feature_lengths)
    if data.task_module:
        importlib.import_module(data.task_module)
    if int(lengths["text_tokens"]) != model.text_length:
        raise ConfigError(f"train.train_data's task_feature_lengths['text_tokens']={lengths['text_tokens']} but "
                         f"Noise2MusicModel.text_length={model.text_length}")
    length = model.text_length

    # 1. The task's texts, as it tokenizes them (distinct, sorted: the store is a function of its inputs).
    seen, rows = 0, {}
    for ex in tasks.text_options(task, split, lengths).as_numpy_iterator():
        seen += 1
        text = ex["text"].decode("utf-8")
        if text not in rows:
            ids = np.asarray(ex["text_tokens"], np.int32)[:length]
            rows[text] = (np.pad(ids, (0, length - len(ids))), len(ids))
        if seen % 5000 == 0:
            print(f"  {seen} options read, {len(rows)} distinct texts", file=sys.stderr, flush=True)
    if not rows:
        raise ConfigError(f"task {task!r} gives no texts on its {split!r} split")
    texts = sorted(rows)
    tokens = np.stack([rows[t][0] for t in texts])
    masks = (np.arange(length)[None] < np.array([rows[t][1] for t in texts])[:, None]).astype(np.int32)
    print(f"{len(texts)} distinct texts from {seen} options of task {task!r} ({split})", file=sys.stderr, flush=True)

    # 2. The encoder a fresh run starts with.
    partitioner = flags_lib.bound("train.partitioner", None) or Partitioner()
    shards = partitioner.num_batch_shards
    batch_size = -(-max(1, batch_size) // shards) * shards
    factory = abstract_state(model, partitioner, batch_size=shards)
    params = model.load_text_encoder(factory.init(int(flags_lib.bound("train.random_seed", 0))).params,
                                     factory.shardings.params)
    encode = jax.jit(model.encode_text)

    # 3. Encode in batches (the last one padded), on the run's mesh.
    chunks = []
    with partitioner.activate():
        for i in range(0, len(texts), batch_size):
            n = len(tokens[i:i + batch_size])
            ids = np.pad(tokens[i:i + batch_size], ((0, batch_size - n), (0, 0)))
            mask = np.pad(masks[i:i + batch_size], ((0, batch_size - n), (0, 0)))
            mask[n:, 0] = 1   # padding rows attend to one position (their output is dropped)
            chunks.append(np.asarray(jax.device_get(encode(params, ids, mask)), np.float32)[:n])
            print(f"  encoded {min(i + batch_size, len(texts))}/{len(texts)}", file=sys.stderr, flush=True)
    emb = np.concatenate(chunks)
    vocab = getattr(model.vocabulary, "sentencepiece_model_file", None)
    manifest = {"task": task, "split": split, "vocabulary": vocab,
                "vocabulary_sha256": text_embeddings.file_sha256(vocab) if vocab else None,
                "text_checkpoint": model.text_checkpoint, "random_seed": int(flags_lib.bound("train.random_seed", 0)),
                "fingerprint": text_embeddings.fingerprint(params["text_encoder"])}
    path = text_embeddings.write(out, texts, tokens, emb, {**manifest, "dtype": dtype})
    return {"out": path, "texts": len(texts), "options_seen": seen, "text_length": length,
            "d_model": int(emb.shape[2]), "dtype": dtype, "store_bytes": int(emb.astype(dtype).nbytes),
            "seconds": round(time.time() - t0, 1)}


def main(argv: list[str] | None = None) -> dict:
    cli.setup_logging()
    from trainer import flags as flags_lib
    from trainer import train  # noqa: F401  (registers the configurables the configs bind)

    with cli.exit_on(flags_lib.FlagError, ValueError, FileNotFoundError):
        flags = flags_lib.parse_argv(list(sys.argv[1:] if argv is None else argv),
                                     own=("out", "split", "batch_size", "dtype"))
        if flags.help:
            print(USAGE)
            sys.exit(0)
        flags_lib.apply(flags)
        out = flags.own.get("out") or flags_lib.bound("%TEXT_EMBEDDINGS", None)
        if not out:
            raise ConfigError("no output folder: pass --out=DIR (or bind TEXT_EMBEDDINGS)")
        dtype = flags.own.get("dtype", "float32")
        if dtype not in ("float32", "float16"):
            raise ConfigError(f"--dtype={dtype!r}: float32 or float16")
        result = embed_texts(out, flags.own.get("split", "train"), int(flags.own.get("batch_size", 64)), dtype)
    print(f"\n{result['texts']} text embeddings in {result['out']}; train with "
          f"--gin.TEXT_EMBEDDINGS=\"'{result['out']}'\"", file=sys.stderr)
    return cli.print_json(result)


if __name__ == "__main__":
    main()
