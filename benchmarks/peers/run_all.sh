#!/usr/bin/env bash
# Runs the PyTorch peers on this machine and writes their JSON where the benchmarks' --peers reads it.
#
#   V=$(bash benchmarks/peers/setup.sh)           # once: a venv with torch (CPU) and the peers
#   bash benchmarks/peers/run_all.sh $V runs/peers
#   python benchmarks/mulan_step.py --peers=runs/peers; python benchmarks/unet_step.py --peers=runs/peers
#
# peak.json: torch / numpy matmul ceiling; mulan.json: musiclm-pytorch MuLaN at mulan/peer_ast.gin's
# shape; unet.json: audio-diffusion-pytorch UNetV0 at benchmarks/unet_step.py's shape; faiss.json:
# exact top-10 with IndexFlatIP.  Each pins 2 threads.  Run on a quiet machine (about 15 minutes).
set -euo pipefail
V="${1:?usage: run_all.sh PEERS_VENV OUT_DIR}"; OUT="${2:?usage: run_all.sh PEERS_VENV OUT_DIR}"
P="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$OUT"
run() { echo "[peers] $*" >&2; "$V/bin/python" "$@" > "$OUT/$(basename "$1" .py).log" 2>&1 || {
  echo "[peers] $1 failed: see $OUT/$(basename "$1" .py).log" >&2; exit 1; }; }
run "$P/peer_peakflops.py" --json "$OUT/peak.json"
run "$P/peer_mulan.py" --preset base --json "$OUT/mulan.json"
run "$P/peer_unet.py" --json "$OUT/unet.json"
run "$P/peer_faiss.py" --bank 1000000 --json "$OUT/faiss.json"
echo "[peers] wrote $OUT/{peak,mulan,unet,faiss}.json" >&2
