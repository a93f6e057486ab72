"""The training order of common/order.py on records read by number (data/indexed_records.py): a
host's batches are its slice of the global batch whatever the number of hosts; the position is a
few integers that restore exactly, on the same or another number of hosts; drops, mixtures,
changed data and truncated record files."""
import json
import os

import numpy as np
import pytest

from trainer.partitioning import DataLayout

N = 37   # records: not a multiple of any batch, so epochs straddle batches


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    import tensorflow as tf

    d = tmp_path_factory.mktemp("records")
    for shard, ids in enumerate(np.array_split(np.arange(N), 3)):
        with tf.io.TFRecordWriter(str(d / f"train-{shard:05d}-of-00003.tfrecord")) as w:
            for i in ids:
                ex = tf.train.Example(features=tf.train.Features(feature={
                    "x": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(i)]))}))
                w.write(ex.SerializeToString())
    return str(d / "train-*.tfrecord")


def _task(name, pattern, drop=None, offset=0, on_bad_record="stop"):
    """Records `x`, plus `r`: a draw from the example's own seed (data.preprocessors.seeded_map),
    plus `offset`."""
    import seqio
    import tensorflow as tf

    from data import preprocessors
    from data.indexed_records import IndexedTFRecordSource

    @preprocessors.seeded_map(num_seeds=1, salt=9)
    def draw(ex, seed):
        return {**ex, "r": tf.random.stateless_uniform([], seed, 0, 1 << 30, dtype=tf.int64) + offset}

    preps = [draw] + ([lambda ds: ds.filter(lambda ex: ex["x"] % 5 != drop)] if drop is not None else [])
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(name, IndexedTFRecordSource({"train": pattern}, {"x": tf.io.FixedLenFeature([], tf.int64)},
                                                       on_bad_record=on_bad_record),
                           preprocessors=preps, output_features={}, shuffle_buffer_size=None)
    return name


def _data(name, **kw):
    from trainer.input_pipeline import SeqioData

    return SeqioData(name, **kw)


def _batches(it, n):
    return [next(it) for _ in range(n)]


def _same(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["x"], y["x"])
        np.testing.assert_array_equal(x["r"], y["r"])


def test_hosts_read_slices_of_the_same_global_batches_and_epochs_are_permutations(records):
    data = _data(_task("order_plain", records))
    whole = _batches(data.make_iterator(DataLayout(8, 8, 0, 1), seed=3), 10)
    hosts = [_batches(data.make_iterator(DataLayout(8, 2, h, 4), seed=3), 10) for h in range(4)]
    for k, b in enumerate(whole):
        for key in ("x", "r"):
            np.testing.assert_array_equal(np.concatenate([hosts[h][k][key] for h in range(4)]), b[key])
    xs = np.concatenate([b["x"] for b in whole])
    assert sorted(xs[:N]) == list(range(N)) and sorted(xs[N:2 * N]) == list(range(N))   # epochs
    assert list(xs[:N]) != list(range(N)) and list(xs[:N]) != list(xs[N:2 * N])        # shuffled, per epoch
    other = _batches(data.make_iterator(DataLayout(8, 8, 0, 1), seed=4), 1)[0]
    assert list(other["x"]) != list(whole[0]["x"])                                      # the seed orders


def test_the_position_is_small_and_resumes_exactly_on_any_number_of_hosts(records):
    data = _data(_task("order_plain", records))
    ref = _batches(data.make_iterator(DataLayout(8, 8, 0, 1), seed=3), 8)
    two = [data.make_iterator(DataLayout(8, 4, h, 2), seed=3) for h in range(2)]
    for it in two:
        _batches(it, 5)
    states = {h: it.get_state() for h, it in enumerate(two)}
    assert all(len(s) < 1024 for s in states.values())
    assert json.loads(states[1])["next"] == [20]
    # 2 hosts -> the same 2 hosts, 1 host, 4 hosts: the global batches of steps 6.. are the same.
    for hosts in (2, 1, 4):
        its = [data.make_iterator(DataLayout(8, 8 // hosts, h, hosts), seed=3) for h in range(hosts)]
        for h, it in enumerate(its):
            it.restore(states, h)
        got = [{k: np.concatenate([next_b[k] for next_b in step]) for k in ("x", "r")}
               for step in zip(*[_batches(it, 3) for it in its])]
        _same(got, ref[5:])


def test_drops_keep_each_host_on_its_own_candidates_and_restore_exactly(records):
    data = _data(_task("order_drop", records, drop=2))
    it = data.make_iterator(DataLayout(6, 3, 1, 2), seed=0)
    seen = _batches(it, 4)
    assert all(x % 5 != 2 for b in seen for x in b["x"])
    state = it.get_state()
    expected = _batches(it, 3)
    again = data.make_iterator(DataLayout(6, 3, 1, 2), seed=0)
    again.set_state(state)
    _same(_batches(again, 3), expected)
    other = _batches(data.make_iterator(DataLayout(6, 3, 0, 2), seed=0), 7)
    ours = [x for b in seen + expected for x in b["x"]]
    theirs = [x for b in other for x in b["x"]]
    # Within an epoch the two hosts never read the same record.
    assert not set(ours[:10]) & set(theirs[:10])


def test_a_mixture_draws_its_tasks_by_rate_and_restores_exactly(records):
    import seqio

    a, b = _task("order_mix_a", records), _task("order_mix_b", records, drop=0, offset=1 << 40)
    seqio.MixtureRegistry.remove("order_mix")
    seqio.MixtureRegistry.add("order_mix", [(a, 3.0), (b, 1.0)])
    data = _data("order_mix")
    it = data.make_iterator(DataLayout(8, 8, 0, 1), seed=1)
    first = _batches(it, 30)
    state = it.get_state()
    rest = _batches(it, 4)
    again = data.make_iterator(DataLayout(8, 8, 0, 1), seed=1)
    again.set_state(state)
    _same(_batches(again, 4), rest)
    from_a = sum(int((b["r"] < 1 << 40).sum()) for b in first)
    assert 160 < from_a < 200, from_a                                   # 3 : 1 of 240
    assert json.loads(state)["draws"] == 240


def test_a_resume_on_changed_data_is_refused_naming_it_unless_allowed(records, tmp_path):
    import shutil

    from common.errors import ConfigError

    data = _data(_task("order_plain", records))
    it = data.make_iterator(DataLayout(8, 8, 0, 1), seed=3)
    _batches(it, 2)
    state = it.get_state()
    with pytest.raises(ConfigError, match=r"seed: 3 -> 4.*allow_data_change=True"):
        data.make_iterator(DataLayout(8, 8, 0, 1), seed=4).set_state(state)
    moved = tmp_path / "more"
    shutil.copytree(os.path.dirname(records), moved)
    shutil.copy(moved / "train-00000-of-00003.tfrecord", moved / "train-00003-of-00003.tfrecord")
    grown = _task("order_grown", str(moved / "train-*.tfrecord"))
    renamed = json.loads(state)
    renamed["tasks"], renamed["records"] = [grown], {grown: renamed["records"]["order_plain"]}
    with pytest.raises(ConfigError, match="records: "):
        _data(grown).make_iterator(DataLayout(8, 8, 0, 1), seed=3).set_state(json.dumps(renamed).encode())
    allowed = _data(grown, allow_data_change=True).make_iterator(DataLayout(8, 8, 0, 1), seed=3)
    allowed.set_state(json.dumps(renamed).encode())
    assert next(allowed)["x"].shape == (8,)


def test_a_truncated_record_file_is_named(records, tmp_path):
    from data.indexed_records import RecordFileError, scan

    path = sorted(__import__("glob").glob(records))[0]
    cut = tmp_path / "cut.tfrecord"
    cut.write_bytes(open(path, "rb").read()[:-7])
    offsets, lengths, problem = scan(path)
    assert problem is None
    assert len(offsets) == len(lengths) == 13
    with pytest.raises(RecordFileError, match=f"{cut}: the record at byte .* the file is truncated"):
        scan(str(cut))


def test_a_record_file_cut_while_the_run_reads_it_stops_the_pipeline_naming_it(records, tmp_path):
    import shutil

    from common.errors import ConfigError

    d = tmp_path / "live"
    shutil.copytree(os.path.dirname(records), d)
    data = _data(_task("order_live", str(d / "train-*.tfrecord")))
    it = data.make_iterator(DataLayout(8, 8, 0, 1), seed=3)
    next(it)   # indexed and reading; now the files lose their second halves
    for f in d.iterdir():
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(ConfigError, match=r"input pipeline of 'order_live' stopped: .*train-0000\d-of-00003.tfrecord: "
                                          r"record \d+ ends early"):
        for _ in range(10):
            next(it)


def test_damaged_records_stop_the_run_naming_them_or_are_skipped_and_counted(records, tmp_path):
    import shutil

    from common.errors import ConfigError
    from data.indexed_records import scan

    d = tmp_path / "damaged"
    shutil.copytree(os.path.dirname(records), d)
    files = sorted(d.iterdir())
    offsets, lengths, _ = scan(str(files[0]))
    raw = bytearray(files[0].read_bytes())
    raw[offsets[2] + lengths[2] - 1] ^= 0xFF                  # record 2's last byte: its CRC fails
    files[0].write_bytes(bytes(raw))
    files[2].write_bytes(files[2].read_bytes()[:-5])          # the last file loses its last record
    pattern = str(d / "train-*.tfrecord")
    with pytest.raises(ConfigError, match=f"{files[2]}: the record at byte .* truncated"):
        next(_data(_task("order_damaged_stop", pattern)).make_iterator(DataLayout(8, 8, 0, 1), seed=3))
    files[2].write_bytes(open(sorted(__import__("glob").glob(records))[2], "rb").read())   # mended
    with pytest.raises(ConfigError, match=rf"{files[0]}: record 2 fails its CRC.*on_bad_record='skip'"):
        _batches(_data(_task("order_damaged_stop2", pattern)).make_iterator(DataLayout(8, 8, 0, 1), seed=3), 5)
    files[2].write_bytes(files[2].read_bytes()[:-5])
    it = _data(_task("order_damaged_skip", pattern, on_bad_record="skip")).make_iterator(DataLayout(8, 8, 0, 1),
                                                                                          seed=3)
    xs = np.concatenate([b["x"] for b in _batches(it, 12)])   # 96 candidates: every record read twice or more
    lost = {2, N - 1}                                         # record 2 (damaged), the last one (cut off)
    assert set(xs) == set(range(N)) - lost
    assert json.loads(it.get_state())["bad_records"] == {"order_damaged_skip": 2}


def test_a_mixture_without_drops_resumes_exactly_on_another_number_of_hosts(records):
    import seqio

    a, b = _task("order_mix_a", records), _task("order_mix_c", records, offset=1 << 40)
    seqio.MixtureRegistry.remove("order_mix_even")
    seqio.MixtureRegistry.add("order_mix_even", [(a, 1.0), (b, 1.0)])
    data = _data("order_mix_even")
    it = data.make_iterator(DataLayout(8, 8, 0, 1), seed=2)
    _batches(it, 3)
    state = it.get_state()
    assert len(set(json.loads(state)["next"])) == 1     # one integer when nothing was dropped
    rest = _batches(it, 3)
    halves = [data.make_iterator(DataLayout(8, 4, h, 2), seed=2) for h in range(2)]
    for h, half in enumerate(halves):
        half.restore({0: state}, h)
    got = [{k: np.concatenate([p[k] for p in step]) for k in ("x", "r")}
           for step in zip(*[_batches(half, 3) for half in halves])]
    _same(got, rest)
