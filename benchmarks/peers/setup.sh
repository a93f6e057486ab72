#!/usr/bin/env bash
# Copied into this repository so that it explains itself; see benchmarks/timing.py for how the JSON is used.
# Builds the peers' venv (PyTorch CPU peers: musiclm-pytorch MuLaN, audio-diffusion-pytorch UNetV0, FAISS).
set -eu
V=${PEERS_VENV:-$(dirname "$(mktemp -u)")/peers-venv}
[ -x "$V/bin/python" ] && "$V/bin/python" -c "import importlib.util as u, audio_diffusion_pytorch, faiss; assert u.find_spec(\"musiclm_pytorch\")" 2>/dev/null && { echo "$V"; exit 0; }
rm -rf "$V"; python3 -m venv "$V"; "$V/bin/pip" install -q --upgrade pip >/dev/null
"$V/bin/pip" install -q torch==2.13.0 >/dev/null  # the CPU wheel on disk (see the env notes)
"$V/bin/pip" install -q --no-deps musiclm-pytorch==0.2.8 x-clip==0.14.4 audio-diffusion-pytorch==0.1.3 a-unet==0.0.16 \
  vector-quantize-pytorch==1.32.0 torchaudio==2.11.0 faiss-cpu==1.15.1 >/dev/null
"$V/bin/pip" install -q einops beartype einx lion-pytorch ftfy regex accelerate torch-einops-utils tqdm numpy psutil \
  threadpoolctl frozendict loguru >/dev/null
# torchaudio's compiled parts are built for another torch; the peers use only its Python parts.
find "$V"/lib/python3*/site-packages/torchaudio -name "*.so" -delete
"$V/bin/python" -c "import importlib.util as u, audio_diffusion_pytorch, faiss; assert u.find_spec(\"musiclm_pytorch\")" >/dev/null 2>&1 || { echo "peer venv broken" >&2; exit 1; }
echo "$V"
