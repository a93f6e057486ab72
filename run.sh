#!/usr/bin/env bash
# The project's two quick-start commands; each sets itself up on a fresh machine
# (Python 3.11 + pip): a virtual environment in .venv with this package installed.
#
#   bash run.sh main [extra flags]   # the main job on the embedded default data
#   bash run.sh test [pytest args]   # the test suite on 8 fake CPU devices
#
# Environment: PYTHON (default python3.11 or python3), VENV (default .venv),
# MODEL_DIR (main job output, default runs/quickstart).
set -euo pipefail
cd "$(dirname "$0")"
cmd="${1:-}"; shift || true

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
VENV="${VENV:-.venv}"

setup() {
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
    echo "$want" > "$stamp"
  fi
}

case "$cmd" in
  main)
    setup
    MODEL_DIR="${MODEL_DIR:-runs/quickstart}"
    exec "$VENV/bin/python" -m trainer.main \
      --gin_file=toy/tiny_cpu.gin --model_dir="$MODEL_DIR" "$@"
    ;;
  test)
    setup
    exec "$VENV/bin/python" -m pytest -n 2 -q tests "$@"
    ;;
  *)
    sed -n '2,10p' "$0"; exit 2 ;;
esac
