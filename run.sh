#!/usr/bin/env bash
# The project's two quick-start commands; each sets itself up on a fresh machine
# (Python 3.11 + pip): a virtual environment in .venv with this package installed.
#
#   bash run.sh main [extra flags]   # the main job on the embedded default data
#   bash run.sh test [pytest args]   # the test suite on 8 fake CPU devices (tests/unit: the fast part)
#   bash run.sh setup                # only the set-up (system packages, .venv)
#
# Environment: PYTHON (default python3.11 or python3), VENV (default .venv),
# MODEL_DIR (main job output, default runs/mulan_tiny).
set -euo pipefail
cd "$(dirname "$0")"
cmd="${1:-}"; shift || true

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
VENV="${VENV:-.venv}"

# System packages for the corpus builder (MMA, FluidSynth, GM SoundFonts); names from setup.py.
system_setup() {
  local pkgs missing=()
  pkgs="$(sed -n 's/^APT_PACKAGES = \[\(.*\)\]/\1/p' setup.py | tr -d '",')"
  for p in $pkgs; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if ! command -v apt-get >/dev/null; then
    echo "[run.sh] please install: ${missing[*]} (MMA, FluidSynth and GM SoundFonts)" >&2; return 1
  fi
  echo "[run.sh] installing system packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

setup() {
  system_setup
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[run.sh] creating virtual environment $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
  fi
  # Reinstall only when setup.py changed since the last install.
  local stamp="$VENV/.n2m-installed" want
  want="$(sha256sum setup.py | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[run.sh] installing noise2music-jax and its pinned dependencies (about 2 minutes)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[test]"
    "$VENV/bin/python" -m pip install -q --no-deps \
      $(sed -n 's/^NO_DEPS = \[\(.*\)\]/\1/p' setup.py | tr -d '",')
    echo "$want" > "$stamp"
  fi
}

case "$cmd" in
  main)
    setup
    # The demo corpus (515 clips of rendered real music, built once into ~/.cache/noise2music, or
    # $N2M_CACHE_DIR), then the tiny MuLan trained on it and evaluated on the held-out works; then
    # pseudo-labels: a caption bank written for the train split's works (midicap + templates), MuLan
    # embeddings, the exact top-10 / inverse-frequency draw for every clip, and the audit of label
    # noise and bias.  Then Noise2Music on those pseudo-labels: the tiny waveform generator (text ->
    # 3.2 kHz) and cascader (-> 16 kHz) are trained, and the cascade samples one caption per
    # held-out clip (music_eval.write_eval_set).  Last, music_eval.evaluate scores the samples against
    # those recordings (FAD on musicnn and MuLan, MuLan similarity, musicnn tag agreement, with
    # baselines) and writes the HTML report.
    MODEL_DIR="${MODEL_DIR:-runs/mulan_tiny}"
    N2M_DIR="${N2M_DIR:-runs/n2m_tiny}"
    py="$VENV/bin/python"
    # The set-up installs libtpu (the tests compile for TPU topologies); this job runs on the CPU.
    export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
    "$py" -m data.build_corpus --preset demo --skip_if_built
    "$py" -m mulan.train --gin_file=mulan/tiny_cpu.gin --model_dir="$MODEL_DIR" "$@"
    "$py" -m mulan.evaluate --model_dir="$MODEL_DIR"
    "$py" -m pseudo_labels.write_bank --out="$MODEL_DIR/caption_bank"
    "$py" -m pseudo_labels.label --model_dir="$MODEL_DIR" --bank="$MODEL_DIR/caption_bank" \
      --out="$MODEL_DIR/pseudo_labels"
    "$py" -m pseudo_labels.audit --labels="$MODEL_DIR/pseudo_labels"
    labels="$(cd "$MODEL_DIR/pseudo_labels" && pwd)"
    task=(--gin_file=datasets/pseudo_labels.gin --gin.TASK="'n2m_pseudo_labels'" --gin.PSEUDO_LABELS_DIR="'$labels'")
    "$py" -m noise2music.train --gin_file=noise2music/tiny_generator.gin "${task[@]}" --model_dir="$N2M_DIR/generator"
    "$py" -m noise2music.train --gin_file=noise2music/tiny_cascader.gin "${task[@]}" --model_dir="$N2M_DIR/cascader"
    "$py" -m music_eval.write_eval_set --out="$N2M_DIR/eval_set" --split=test
    "$py" -m noise2music.sample --prompts="$N2M_DIR/eval_set/prompts.txt" \
      --out="$N2M_DIR/samples" --generator="$N2M_DIR/generator" --cascader="$N2M_DIR/cascader" \
      --generator_steps=uniform:100 --cascader_steps=uniform:50
    exec "$py" -m music_eval.evaluate --generated="$N2M_DIR/samples" \
      --reference="$N2M_DIR/eval_set" --mulan="$MODEL_DIR" --out="$N2M_DIR/eval" --fad_inf --name="tiny cascade" \
      --title="Tiny Noise2Music cascade (run.sh main) vs the demo corpus's held-out clips"
    ;;
  setup)
    setup
    ;;
  test)
    # Everything (tests/unit + tests/integration); `bash run.sh test tests/unit` runs the fast unit
    # tests only (no subprocess, no corpus: about 2 minutes on 2 cores).  Other arguments go to pytest.
    setup
    exec "$VENV/bin/python" -m pytest -n 2 --dist worksteal -q "${@:-tests}"
    ;;
  *)
    sed -n '2,10p' "$0"; exit 2 ;;
esac
