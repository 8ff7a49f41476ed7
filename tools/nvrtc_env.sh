#!/usr/bin/env bash
# Installs NVIDIA's runtime compiler (NVRTC, from PyPI's `nvidia-cuda-nvrtc`) into a virtual
# environment cached outside the repository, and prints the folder that holds `libnvrtc.so.13`.
# No GPU or driver is needed: NVRTC only turns CUDA C into PTX.
#
#   export LD_LIBRARY_PATH="$(tools/nvrtc_env.sh)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
#
# The environment lives in ${LRP_NVRTC_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/lrp/nvrtc-venv}, so
# that later runs on the same machine (and fresh clones) reuse it.
set -euo pipefail
venv="${LRP_NVRTC_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/lrp/nvrtc-venv}"
find_lib() { find "$venv" -name 'libnvrtc.so.13*' -print -quit 2>/dev/null; }
if [ -z "$(find_lib)" ]; then
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'nvidia-cuda-nvrtc>=13,<14' >&2
fi
lib="$(find_lib)"
if [ -z "$lib" ]; then
    echo "tools/nvrtc_env.sh: libnvrtc.so.13 not found under $venv after installing nvidia-cuda-nvrtc" >&2
    exit 1
fi
dirname "$lib"
