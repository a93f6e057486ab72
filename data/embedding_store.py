"""Embeddings on disk, in shards with an index: what `mulan.embed` and the pseudo-label build
write, and what the pseudo-label runtime (`data.pseudo_label_index`) reads.

    FOLDER/{kind}-00000-of-00003.npy ...   [rows, D] float32   (or .parquet: columns id, embedding)
    FOLDER/{kind}_index.jsonl              one line per row: id, shard, row, and the writer's fields
                                           (source path, windows, seconds, text, ...)

    files = write_shards(folder, "audio", ids, emb, extra, shard_size=4096)
    ids, emb, rows = read_embeddings(folder, "audio")

On several hosts (`mulan.embed`, the pseudo-label build), process p of P writes its own shards and
index, `{kind}-p{p:05d}-00000-of-00002.npy` and `{kind}_index.p{p:05d}.jsonl` (`part=(p, P)`), and
process 0, once all have written, joins the indexes in process order (`merge_parts`): the folder
then reads as one, the rows in the order of the hosts' blocks.

Every file is written under a temporary name and renamed when complete; the index last.
Numpy (and pyarrow for parquet) only.
"""
from __future__ import annotations

import json
import os

import numpy as np


def _index_name(kind: str, part: tuple[int, int]) -> str:
    return f"{kind}_index.jsonl" if part[1] == 1 else f"{kind}_index.p{part[0]:05d}.jsonl"


def write_shards(out: str, kind: str, ids: list[str], emb: np.ndarray, extra: list[dict], shard_size: int = 4096,
                 fmt: str = "npy", part: tuple[int, int] = (0, 1)) -> list[str]:
    """Writes `emb` [N, D] (row i has id `ids[i]` and index fields `extra[i]`) as shards of
    `shard_size` rows; returns the shard paths.  `part=(p, P)`: process p's share of a P-process
    run (see the module doc)."""
    os.makedirs(out, exist_ok=True)
    n_shards = max(1, -(-len(ids) // shard_size))
    files, index = [], os.path.join(out, _index_name(kind, part))
    stem = kind if part[1] == 1 else f"{kind}-p{part[0]:05d}"
    with open(index + ".tmp", "w", encoding="utf-8") as idx:
        for s in range(n_shards):
            name = f"{stem}-{s:05d}-of-{n_shards:05d}.{'npy' if fmt == 'npy' else 'parquet'}"
            part = emb[s * shard_size:(s + 1) * shard_size]
            path = os.path.join(out, name)
            if fmt == "npy":
                np.save(path + ".tmp.npy", part.astype(np.float32))
                os.replace(path + ".tmp.npy", path)
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.table({"id": ids[s * shard_size:(s + 1) * shard_size],
                                  "embedding": pa.array(list(part.astype(np.float32)), pa.list_(pa.float32()))})
                pq.write_table(table, path + ".tmp")
                os.replace(path + ".tmp", path)
            files.append(path)
            for r in range(len(part)):
                i = s * shard_size + r
                idx.write(json.dumps({"id": ids[i], "shard": name, "row": r, **extra[i]}) + "\n")
    os.replace(index + ".tmp", index)
    return files


def merge_parts(out: str, kind: str, processes: int) -> int:
    """Joins the P processes' indexes of `kind` into `{kind}_index.jsonl` (process order) and
    removes them; returns the rows.  A missing part is an error naming it."""
    parts = [os.path.join(out, _index_name(kind, (p, processes))) for p in range(processes)]
    missing = [p for p in parts if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: process {parts.index(missing[0])} wrote no {kind} index (is {out} "
                                f"a folder every host sees?)")
    rows = 0
    with open(os.path.join(out, f"{kind}_index.jsonl.tmp"), "w", encoding="utf-8") as idx:
        for p in parts:
            with open(p, encoding="utf-8") as f:
                for line in f:
                    idx.write(line)
                    rows += 1
    os.replace(os.path.join(out, f"{kind}_index.jsonl.tmp"), os.path.join(out, f"{kind}_index.jsonl"))
    for p in parts:
        os.remove(p)
    return rows


def read_embeddings(folder: str, kind: str) -> tuple[list[str], np.ndarray, list[dict]]:
    """What `write_shards` wrote: (ids, [N, D] float32, index rows)."""
    index_path = os.path.join(folder, f"{kind}_index.jsonl")
    if not os.path.exists(index_path):
        raise FileNotFoundError(f"{index_path} is missing (embed with `python -m mulan.embed`)")
    with open(index_path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    shards: dict[str, np.ndarray] = {}
    for r in rows:
        if r["shard"] not in shards:
            path = os.path.join(folder, r["shard"])
            if path.endswith(".npy"):
                shards[r["shard"]] = np.load(path)
            else:
                import pyarrow.parquet as pq

                shards[r["shard"]] = np.stack(pq.read_table(path).column("embedding").to_numpy(zero_copy_only=False))
    names = list(shards)
    expect = [(n, i) for n in names for i in range(len(shards[n]))]
    if expect == [(r["shard"], r["row"]) for r in rows]:  # as written: whole shards in order
        parts = [shards[n] for n in names]
    else:
        parts = [np.stack([shards[r["shard"]][r["row"]] for r in rows])] if rows else []
    emb = np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros((0, 0), np.float32)
    return [r["id"] for r in rows], emb, rows
