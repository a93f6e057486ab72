"""The recipes (configs/recipes/*.gin): every one names its TPU slice, its mesh covers that slice,
and its golden (tests/golden/recipes.json, written by `python benchmarks/recipes.py
--write_golden`) fits HBM with 10% headroom; the quickest recipes are compiled again for their
slice with `N2M_COMPILE_RECIPES=1` and must match their goldens' bytes per device (the quickest
takes 3 to 6 minutes on 2 cores, more than the suite's budget allows it by default; the TPU
compile path itself is exercised in tests/unit/test_compile.py).  All of them are compiled and
compared by the benchmark (tens of minutes each on 2 cores)."""
import glob
import importlib.util
import json
import math
import os

import pytest

from tests import helpers

RECIPES = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(helpers.ROOT, "configs", "recipes", "*.gin")))
GOLDEN = json.load(open(os.path.join(helpers.ROOT, "tests", "golden", "recipes.json")))
COMPILED_HERE = ("spectrogram_vocoder_v5p-128",)
needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="needs libtpu (the [tpu] extra)")
opted_in = pytest.mark.skipif(os.environ.get("N2M_COMPILE_RECIPES") != "1",
                              reason="N2M_COMPILE_RECIPES=1 compiles a recipe for its TPU slice (minutes); "
                                     "`python benchmarks/recipes.py` compiles and checks them all")


def _apply(recipe):
    from trainer import flags

    flags.parse_and_apply([f"--gin_file=recipes/{recipe}.gin", "--model_dir=/tmp/unused"], "")
    return flags


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_names_its_slice_and_has_a_golden_that_fits(recipe):
    from trainer import topology

    flags = _apply(recipe)
    name = flags.bound("%TOPOLOGY")
    assert flags.bound("train.topology_name") == name
    mesh = flags.bound("Partitioner.mesh_shape")
    assert math.prod(mesh) == topology.num_chips(name), (mesh, name)
    assert flags.bound("train.batch_size") % (mesh[0] * mesh[1]) == 0
    golden = GOLDEN[recipe]
    assert golden["topology"] == name and list(golden["mesh"].values()) == list(mesh)
    assert golden["hbm_gib_per_device"] <= 0.9 * topology.chip(name).hbm_bytes / 2 ** 30


@needs_libtpu
@opted_in
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("recipe", COMPILED_HERE)
def test_a_recipe_compiles_to_its_golden_memory(recipe, capsys):
    from trainer import compile as compile_bin

    report = compile_bin.main([f"--gin_file=recipes/{recipe}.gin"])
    capsys.readouterr()
    assert report["fits"]
    golden = GOLDEN[recipe]["hbm_gib_per_device"]
    assert report["hbm_bytes_per_device"] / 2 ** 30 == pytest.approx(golden, rel=0.03), (recipe, golden)
