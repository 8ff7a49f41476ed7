#!/usr/bin/env bash
# The GPU check: build here, run on a machine with an NVIDIA GPU (no Rust, no network there).
#
#   tools/gpu_check.sh build [DIR]      here, from the repository (DIR: target/gpu-check)
#   DIR/gpu_check.sh run                there, from anywhere: DIR is the script's own folder
#   tools/gpu_check.sh dry-run [DIR]    here: `run --emulated` on a copy of DIR in /tmp (logs:
#                                       DIR-dry-run)
#
# build: `cargo build --release --features cuda` of the test binaries that run GPU code (the
#   `lrp-runtime` unit tests, run there with the filter `gpu::`; `tests/gpu_models.rs`, GPU
#   models against their CPU models, every kernel launched; `tests/zennit_mlp.rs`,
#   `zennit_cnn.rs` and `zennit_graphs.rs` (ResNet, Tanh MLP, text CNN), which check every GPU
#   model against the Zennit fixtures and the CPU model; `tests/lstm_fixtures.rs`, the LSTM-LRP
#   fixtures; `tests/recurrent_specs.rs`, LSTM/GRU GPU models against their CPU models;
#   `tests/vqa_fixtures.rs`, the VQA model's Zennit + LSTM-LRP fixtures; each
#   binary's CPU tests run too) and of `examples/gpu_bench.rs`, stripped, into DIR/bin; the
#   fixtures they read into DIR/fixtures; `benches/reference/bench_pytorch.py`; the pure-Python `zennit` 0.5.1 wheel
#   (and a numpy wheel for a Python 3.12 that lacks it) into DIR/wheels; this script. Fails if
#   DIR exceeds 64 MiB. Needs cargo, python3 with pip, network (PyPI) and `strip`.
#
# run: finds the CUDA 13 libraries (cuBLAS, NVRTC: the `nvidia-*` pip packages beside PyTorch,
#   `site-packages/nvidia/*/lib`; the driver's libcuda.so from the system), then, each part
#   under `timeout`, all of them within T_ALL (7.5 minutes):
#   1. every test binary on the GPU (`LRP_DEVICE=cuda`: a test without a device fails, never
#      skips); a failing test binary makes `run` exit 1, after printing everything else;
#   2. `bin/gpu_bench`: VGG-16 (EpsilonGammaBox, EpsilonPlus) and the bidirectional LSTM of
#      `benches/models.rs` (LRP-all; a batch is that many sequences of 50 tokens) predict and
#      explain, batch 1/16/64;
#   3. zennit installed from the wheel into DIR/pylib (`pip install --no-index`), then
#      `bench_pytorch.py --device cuda`: PyTorch's forward and Zennit's explain of the same
#      models on the same GPU (skipped, saying so, when `import torch` fails); for the LSTM
#      PyTorch's forward only (`torch_lstm`: Zennit has no LRP-all);
#   4. `bin/gpu_bench --tf32` (VGG-16 only; `mlp` when emulated, where it only prints
#      `SKIPPED: TF32 needs a GPU`): the same timings with TF32 products allowed
#      (`<composite>+tf32` rows) and TF32's relevance and logits against FP32 (per sample
#      `max |R_tf32 - R_fp32| / max |R_fp32|`); skipped, saying so, when less than T_TF32_MIN of
#      T_ALL is left;
#   5. one markdown table joining 2, 3 and 4 per model/composite/batch (the `+tf32` rows against
#      the FP32 PyTorch and Zennit timings), then per composite "TF32 vs FP32 relevance: worst X,
#      median Y (batch B)" and the TF32 explain's images/s at batch 64.
#   Logs and results go to $GPU_CHECK_OUT (default DIR/results).
#   `run --emulated` runs the same parts on the emulated device (the GPU kernels on the CPU):
#   the MLP benchmark instead of VGG-16 (and the LSTM), PyTorch on the CPU; what `dry-run` uses.
#
# Environment of `run` (set by it): LRP_DEVICE=cuda (the GPU; unset with --emulated),
#   LRP_FIXTURES_DIR=DIR/fixtures (where the tests read their fixtures), LRP_REQUIRE_NVRTC=1
#   (a missing NVRTC fails its test instead of skipping), LD_LIBRARY_PATH (+ the CUDA
#   libraries), PYTHONPATH=DIR/pylib (for bench_pytorch.py).
# Read by `run`: PYTHON (python3), GPU_CHECK_OUT, GPU_CHECK_MODELS (vgg16,bilstm; mlp,bilstm
#   when emulated), GPU_CHECK_BATCHES (1,16,64), and the timeouts in seconds T_TEST (50, per test
#   binary), T_BENCH (150), T_PIP (30), T_TORCH (120), T_TORCH_LSTM (30), T_TF32 (120; run only
#   when T_TF32_MIN, 60, is left), and T_ALL (450) for all parts together: a part gets at most
#   what is left of T_ALL (none once under 5 s: it is skipped and counted as timed out).
set -uo pipefail

die() { echo "gpu_check.sh: $*" >&2; exit 1; }

usage() {
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-1}"
}

# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------
build() {
    set -e
    local root dir
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    [ -f "$root/Cargo.toml" ] && [ -f "$root/examples/gpu_bench.rs" ] || die "build runs from the repository's tools/"
    dir="${1:-$root/target/gpu-check}"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    cd "$root"
    local start=$SECONDS
    echo "== building into $dir"
    # Everything is compiled and listed before the folder is emptied: a failed build leaves
    # the previous folder as it was.
    cargo build --release --features cuda --example gpu_bench
    # Builds the test binaries and names them: the lib test binary of `lrp-runtime` and the
    # integration tests of `lrp` in $tests (each is DIR/bin/test-<name>).
    local tests="gpu_models zennit_mlp zennit_cnn zennit_graphs lstm_fixtures recurrent_specs vqa_fixtures" listing t args=()
    for t in $tests; do args+=(--test "$t"); done
    listing="$(cargo test --release --features cuda -p lrp -p lrp-runtime --lib "${args[@]}" \
        --no-run --message-format=json)"
    local wheels="$dir/.wheels.new"
    rm -rf "$wheels"
    python3 -m pip download --quiet --disable-pip-version-check zennit==0.5.1 --no-deps -d "$wheels"
    # zennit imports numpy; PyTorch does not require it. For a Python 3.12 without it.
    python3 -m pip download --quiet --disable-pip-version-check numpy --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$wheels/fallback" ||
        echo "   (no numpy wheel: run needs numpy on the GPU machine)"

    rm -rf "$dir/bin" "$dir/fixtures" "$dir/wheels" "$dir/pylib" "$dir/pystubs" "$dir/results"
    mv "$wheels" "$dir/wheels"
    mkdir -p "$dir/bin" "$dir/fixtures"
    printf '%s\n' "$listing" | python3 -c '
import json, os, shutil, sys
# (target name, target kind) -> the name in DIR/bin
want = {("lrp_runtime", "lib"): "test-lrp_runtime_lib"}
want.update({(t, "test"): "test-" + t for t in sys.argv[2].split()})
found = {}
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]:
        continue
    for (target, kind), name in want.items():
        if target == m["target"]["name"] and kind in m["target"]["kind"]:
            found[name] = m["executable"]
missing = sorted(set(want.values()) - set(found))
if missing:
    sys.exit("test binaries not in the output of cargo test --no-run: " + ", ".join(missing))
for name, exe in sorted(found.items()):
    print(f"   bin/{name} <- {exe}", file=sys.stderr)
    shutil.copy(exe, os.path.join(sys.argv[1], name))
' "$dir/bin" "$tests"
    cp target/release/examples/gpu_bench "$dir/bin/gpu_bench"
    strip "$dir"/bin/*

    # What the tests read: zennit_mlp, zennit_cnn, zennit_graphs (resnet, tanh_mlp, text_cnn)
    # and lstm_fixtures (lstm, bilstm); gpu_models and recurrent_specs make their weights.
    cp tests/fixtures/{mlp,cnn,resnet,tanh_mlp,text_cnn,lstm,bilstm}.{weights,cases}.safetensors "$dir/fixtures/"
    mkdir -p "$dir/fixtures/vqa"
    cp tests/fixtures/vqa/vqa_small.{weights,cases}.safetensors "$dir/fixtures/vqa/"
    cp benches/reference/bench_pytorch.py "$dir/"
    cp "$root/tools/gpu_check.sh" "$dir/gpu_check.sh"
    chmod +x "$dir/gpu_check.sh"

    {
        echo "built $(date -u +%Y-%m-%dT%H:%MZ) from commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
            "($(git status --porcelain 2>/dev/null | wc -l) changed files in the work tree)"
        (cd "$dir" && find bin fixtures wheels -type f -printf '%s\t%p\n' | sort -k2)
    } >"$dir/MANIFEST"

    local size limit=$((64 * 1024 * 1024))
    size=$(du -sb "$dir" | cut -f1)
    echo "== $dir: $size bytes ($((size / 1024 / 1024)) MiB of at most 64), built in $((SECONDS - start)) s"
    [ "$size" -le "$limit" ] || die "$dir is larger than 64 MiB"
    echo "   next: copy $dir to the GPU machine, then: <dir>/gpu_check.sh run"
}

# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------

# The lib folders of the nvidia-* pip packages of $py (cuBLAS, NVRTC, ...), colon-separated.
cuda_lib_dirs() {
    "$1" - <<'EOF' 2>/dev/null
import glob, os, site, sys
roots = list(site.getsitepackages()) + [site.getusersitepackages()] + sys.path
try:
    import torch
    roots.append(os.path.dirname(os.path.dirname(torch.__file__)))
except Exception:
    pass
dirs = []
for r in roots:
    for d in sorted(glob.glob(os.path.join(r, "nvidia", "*", "lib"))):
        d = os.path.realpath(d)
        if d not in dirs:
            dirs.append(d)
print(":".join(dirs))
EOF
}

# `part NAME SECONDS CMD...`: runs CMD under timeout (SECONDS, at most what is left until
# $deadline), output to the terminal and $out/NAME.log; returns its exit status (124: timed out,
# or skipped for lack of time).
part() {
    local name=$1 secs=$2
    shift 2
    local left=$((deadline - SECONDS))
    [ "$secs" -le "$left" ] || secs=$left
    echo
    if [ "$secs" -lt 5 ]; then
        echo "== $name: SKIPPED, ${left}s left of T_ALL" | tee "$out/$name.log"
        echo "$name	124	0" >>"$out/parts.tsv"
        return 124
    fi
    echo "== $name (timeout ${secs}s): $*"
    local t0=$SECONDS
    timeout -k 10 "$secs" "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "-- $name: exit $rc in $((SECONDS - t0)) s$([ "$rc" = 124 ] && echo ' (TIMED OUT)')"
    echo "$name	$rc	$((SECONDS - t0))" >>"$out/parts.tsv"
    return "$rc"
}

# `gpu_check.sh _install-zennit PY`: makes zennit importable by PY from DIR/pylib: installs
# the wheel there (numpy too if PY lacks it), and stubs for PIL and torchvision in DIR/pystubs
# if they are missing (zennit imports them; it uses them only for images and ResNets).
install_zennit() {
    local py=$1 dir pylib
    dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    pylib="$dir/pylib"
    rm -rf "$pylib" "$dir/pystubs"
    mkdir -p "$pylib"
    "$py" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --target "$pylib" "$dir"/wheels/zennit-*.whl ||
        { echo "pip failed; unpacking the wheel instead"; "$py" -m zipfile -e "$dir"/wheels/zennit-*.whl "$pylib"; } || return 1
    if ! "$py" -c 'import numpy' 2>/dev/null; then
        echo "numpy missing: installing the fallback wheel"
        "$py" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --target "$pylib" \
            "$dir"/wheels/fallback/numpy-*.whl || return 1
    fi
    local stubs=()
    "$py" -c 'import PIL.Image' 2>/dev/null || stubs+=(PIL)
    "$py" -c 'import torchvision.models.resnet' 2>/dev/null || stubs+=(torchvision)
    if [ ${#stubs[@]} -gt 0 ]; then
        echo "not installed: ${stubs[*]}; zennit gets stubs (enough for VGG-16/MLP, not for resnet50)"
        mkdir -p "$dir/pystubs/PIL" "$dir/pystubs/torchvision/models"
        printf '"""Stub: zennit imports PIL.Image at import time only."""\n' >"$dir/pystubs/PIL/__init__.py"
        printf '"""Stub."""\n' >"$dir/pystubs/PIL/Image.py"
        printf '"""Stub: zennit imports torchvision.models.resnet at import time only."""\n' \
            >"$dir/pystubs/torchvision/__init__.py"
        printf '' >"$dir/pystubs/torchvision/models/__init__.py"
        printf 'import torch\n\n\nclass Bottleneck(torch.nn.Module):\n    pass\n\n\nclass BasicBlock(torch.nn.Module):\n    pass\n' \
            >"$dir/pystubs/torchvision/models/resnet.py"
        for s in PIL torchvision; do
            [[ " ${stubs[*]} " == *" $s "* ]] || rm -rf "${dir:?}/pystubs/$s"
        done
    fi
    PYTHONPATH="$(python_path "$dir")" "$py" -c 'import zennit.composites; print("zennit", zennit.__file__)'
}

# The PYTHONPATH of bench_pytorch.py: DIR/pylib, DIR/pystubs if made, the caller's.
python_path() {
    local p="$1/pylib"
    [ -d "$1/pystubs" ] && p="$p:$1/pystubs"
    echo "$p${PYTHONPATH:+:$PYTHONPATH}"
}

# `python torch_lstm.py --device D --batches B` (written to $out from this text): PyTorch's
# forward of the `bilstm` benchmark's network (examples/gpu_bench.rs: embedding 1000 x 60, a
# bidirectional LSTM of hidden 60, a dense layer of h_n to 5 classes; random weights) on `batch`
# sequences of 50 tokens under no_grad, timed as bench_pytorch.py does (2 warm-up calls, then
# the median of 50, each synchronised on the GPU).
TORCH_LSTM='
import argparse, statistics, time
import torch
from torch import nn
ap = argparse.ArgumentParser()
ap.add_argument("--device", default="cpu")
ap.add_argument("--batches", default="1,16,64")
a = ap.parse_args()
dev = torch.device(a.device)
sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
torch.manual_seed(0)
emb, lstm, fc = nn.Embedding(1000, 60), nn.LSTM(60, 60, bidirectional=True, batch_first=True), nn.Linear(120, 5)
for m in (emb, lstm, fc):
    m.eval().to(dev)
def forward(tokens):
    _, (h, _) = lstm(emb(tokens))
    return fc(torch.cat([h[0], h[1]], dim=1))
for batch in [int(b) for b in a.batches.split(",")]:
    tokens = torch.randint(0, 1000, (batch, 50), device=dev)
    times = []
    with torch.no_grad():
        for i in range(52):
            t = time.perf_counter()
            forward(tokens)
            sync()
            if i >= 2:
                times.append((time.perf_counter() - t) * 1e3)
    print(f"bilstm/predict/{batch} {statistics.median(times):.3f}", flush=True)
'

run() {
    emulated=0
    case "${1:-}" in
        --emulated) emulated=1 ;;
        "") ;;
        *) die "run takes no arguments but --emulated" ;;
    esac
    dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    local f
    for f in bin/gpu_bench bin/test-lrp_runtime_lib bin/test-gpu_models bin/test-zennit_mlp bin/test-zennit_cnn \
        bin/test-zennit_graphs bin/test-lstm_fixtures bin/test-recurrent_specs bin/test-vqa_fixtures fixtures/mlp.cases.safetensors \
        fixtures/resnet.cases.safetensors fixtures/lstm.cases.safetensors bench_pytorch.py; do
        [ -e "$dir/$f" ] || die "$dir/$f is missing: run tools/gpu_check.sh build (in the repository) first"
    done
    out="${GPU_CHECK_OUT:-$dir/results}"
    mkdir -p "$out"
    out="$(cd "$out" && pwd)"
    rm -f "$out"/*.log "$out"/parts.tsv "$out"/ours.txt "$out"/reference.txt "$out"/tf32.txt "$out"/table.md \
        "$out"/torch_lstm.py
    local py="${PYTHON:-python3}" start=$SECONDS status=0
    deadline=$((SECONDS + ${T_ALL:-450}))
    local models batches="${GPU_CHECK_BATCHES:-1,16,64}" torch_device
    export LRP_FIXTURES_DIR="$dir/fixtures"
    [ -f "$dir/MANIFEST" ] && head -1 "$dir/MANIFEST"
    if [ "$emulated" = 1 ]; then
        unset LRP_DEVICE LRP_REQUIRE_NVRTC
        models="${GPU_CHECK_MODELS:-mlp,bilstm}"
        torch_device=cpu
        echo "== emulated device: the GPU kernels on the CPU"
    else
        export LRP_DEVICE=cuda LRP_REQUIRE_NVRTC=1
        models="${GPU_CHECK_MODELS:-vgg16,bilstm}"
        torch_device=cuda
        local libs
        libs="$(cuda_lib_dirs "$py")"
        [ -n "$libs" ] || echo "warning: no site-packages/nvidia/*/lib found for $py; relying on the system's CUDA libraries"
        export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        echo "== CUDA libraries from: ${libs:-(system)}"
        command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    fi
    echo "== LRP_DEVICE=${LRP_DEVICE:-} LRP_FIXTURES_DIR=$LRP_FIXTURES_DIR LRP_REQUIRE_NVRTC=${LRP_REQUIRE_NVRTC:-}"

    # 1. The tests.
    local t name
    for t in "$dir"/bin/test-*; do
        name="$(basename "$t")"
        if [ "$name" = test-lrp_runtime_lib ]; then
            part "$name" "${T_TEST:-50}" "$t" gpu:: || status=1
        else
            part "$name" "${T_TEST:-50}" "$t" || status=1
        fi
    done

    # 2. Our benchmark.
    part gpu_bench "${T_BENCH:-150}" "$dir/bin/gpu_bench" --models "$models" --batches "$batches" || status=1
    grep -E '^[a-z0-9_]+/[a-z0-9_]+/(predict|explain)/[0-9]+ [0-9.]+$' "$out/gpu_bench.log" >"$out/ours.txt"

    # 3. PyTorch and Zennit.
    local torch_ok=0
    if ! "$py" -c 'import torch' 2>/dev/null; then
        echo
        echo "== SKIPPED PyTorch/Zennit: \`$py -c 'import torch'\` fails (set PYTHON to a python with torch)"
    elif [ "$torch_device" = cuda ] && ! "$py" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
        echo
        echo "== SKIPPED PyTorch/Zennit: PyTorch sees no CUDA device"
    else
        # bench_pytorch.py knows the image models; the LSTM is timed here (forward only).
        local zmodels
        zmodels="$(printf '%s' "$models" | tr ',' '\n' | grep -vx bilstm | paste -sd, -)"
        : >"$out/reference.txt"
        if [ -n "$zmodels" ] && part zennit_install "${T_PIP:-30}" "$dir/gpu_check.sh" _install-zennit "$py"; then
            if part bench_pytorch "${T_TORCH:-120}" env PYTHONPATH="$(python_path "$dir")" \
                "$py" "$dir/bench_pytorch.py" --device "$torch_device" --models "$zmodels" --batches "$batches"; then
                torch_ok=1
            fi
            grep -E '^[a-z0-9_]+/([a-z0-9_]+/)?(predict|explain)/[0-9]+ [0-9.]+$' "$out/bench_pytorch.log" \
                >>"$out/reference.txt"
        fi
        if [[ ",$models," == *,bilstm,* ]]; then
            printf '%s' "$TORCH_LSTM" >"$out/torch_lstm.py"
            part torch_lstm "${T_TORCH_LSTM:-30}" "$py" "$out/torch_lstm.py" --device "$torch_device" --batches "$batches" ||
                true
            grep -E '^bilstm/predict/[0-9]+ [0-9.]+$' "$out/torch_lstm.log" >>"$out/reference.txt"
        fi
    fi

    # 4. TF32 products against FP32: our benchmark again, with what is left of T_ALL.
    local tf32_models tf32_min="${T_TF32_MIN:-60}"
    tf32_models="$(printf '%s' "$models" | tr ',' '\n' | grep -xE 'vgg16|mlp' | paste -sd, -)"
    : >"$out/tf32.txt"
    if [ -z "$tf32_models" ]; then
        echo
        echo "== gpu_bench_tf32: SKIPPED, no model with a TF32 measurement (vgg16, mlp) in $models" |
            tee "$out/gpu_bench_tf32.log"
    elif [ $((deadline - SECONDS)) -lt "$tf32_min" ]; then
        echo
        echo "== gpu_bench_tf32: SKIPPED, $((deadline - SECONDS))s left of T_ALL (T_TF32_MIN: ${tf32_min}s)" |
            tee "$out/gpu_bench_tf32.log"
        printf 'gpu_bench_tf32\tskipped\t0\n' >>"$out/parts.tsv"
    else
        part gpu_bench_tf32 "${T_TF32:-120}" "$dir/bin/gpu_bench" --tf32 --models "$tf32_models" --batches "$batches" ||
            status=1
        grep -E '^[a-z0-9_]+/[a-z0-9_]+\+tf32/(predict|explain)/[0-9]+ [0-9.]+$' "$out/gpu_bench_tf32.log" \
            >>"$out/ours.txt"
        grep -E '^[a-z0-9_]+/[a-z0-9_]+\+tf32/(relevance_error|logit_error|target_changes)/[0-9]+( [^ ]+)+$' \
            "$out/gpu_bench_tf32.log" >"$out/tf32.txt"
    fi

    # 5. The summary and the table.
    echo
    echo "== summary ($((SECONDS - start)) s)"
    echo
    echo "| part | exit | seconds | tests |"
    echo "|---|---|---|---|"
    local rc secs tests
    while IFS=$'\t' read -r name rc secs; do
        tests="$(grep -E '^test result:' "$out/$name.log" 2>/dev/null | sed -E 's/^test result: //; s/; finished in .*//' |
            paste -sd ' ' -)"
        local skipped
        skipped="$(grep -c 'SKIPPED' "$out/$name.log" 2>/dev/null || true)"
        [ "${skipped:-0}" -gt 0 ] && tests="$tests (${skipped} SKIPPED lines)"
        echo "| $name | $rc$([ "$rc" = 124 ] && echo ' timed out') | $secs | $tests |"
    done <"$out/parts.tsv"
    local devices
    devices="$(grep -ho 'on device: .*' "$out"/*.log 2>/dev/null | sort -u | sed 's/^on device: //' | paste -sd ';' -)"
    echo
    echo "devices seen: ${devices:-none reported}"
    echo
    python3 - "$out/ours.txt" "$out/reference.txt" "$out/tf32.txt" <<'EOF' | tee "$out/table.md"
import sys

def read(path, n=1):
    try:
        with open(path) as f:
            rows = (line.split() for line in f if line.strip())
            return {r[0]: [float(v) for v in r[1:]] if n > 1 else float(r[1]) for r in rows}
    except FileNotFoundError:
        return {}

ours, ref, tf32 = read(sys.argv[1]), read(sys.argv[2]), read(sys.argv[3], n=2)
rows = sorted({tuple(k.split("/")[:2]) + (int(k.split("/")[3]),) for k in ours}, key=lambda r: (r[0], r[1], r[2]))
fmt = lambda v, spec=".2f": "–" if v is None else format(v, spec)
div = lambda a, b: None if a is None or b is None or b == 0 else a / b
print("| model | composite | batch | ours predict ms | PyTorch forward ms | ours/PyTorch "
      "| ours explain ms | Zennit explain ms | Zennit/ours | ours explain/predict | explain inputs/s |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for model, comp, batch in rows:
    p = ours.get(f"{model}/{comp}/predict/{batch}")
    e = ours.get(f"{model}/{comp}/explain/{batch}")
    tp = ref.get(f"{model}/predict/{batch}")
    ze = ref.get(f"{model}/{comp[:-5] if comp.endswith('+tf32') else comp}/explain/{batch}")
    ips = None if e is None or e == 0 else batch * 1e3 / e
    print(f"| {model} | {comp} | {batch} | {fmt(p, '.3f')} | {fmt(tp, '.3f')} | {fmt(div(p, tp))} "
          f"| {fmt(e, '.3f')} | {fmt(ze, '.3f')} | {fmt(div(ze, e))} | {fmt(div(e, p))} | {fmt(ips, '.0f')} |")
if not rows:
    print("| (no measurements of ours) | | | | | | | | | | |")
# TF32 against FP32: per model/composite, the largest batch measured.
for model, comp in sorted({tuple(k.split("/")[:2]) for k in tf32}):
    errors = {int(k.split("/")[3]): v for k, v in tf32.items() if k.startswith(f"{model}/{comp}/relevance_error/")}
    if not errors:
        continue
    b = max(errors)
    worst, median = (errors[b] + [float("nan")] * 2)[:2]
    logits = tf32.get(f"{model}/{comp}/logit_error/{b}", [float("nan")])
    changed = tf32.get(f"{model}/{comp}/target_changes/{b}", [float("nan")])
    print()
    print(f"TF32 vs FP32 relevance: worst {worst:.2e}, median {median:.2e} (batch {b}) [{model}/{comp}; "
          f"logits worst {logits[0]:.2e}; predicted class changed in {changed[0]:.0f} of {b}]")
    base = comp[:-5] if comp.endswith("+tf32") else comp
    e, e32 = ours.get(f"{model}/{comp}/explain/64"), ours.get(f"{model}/{base}/explain/64")
    ips = lambda t: "–" if t is None or t == 0 else f"{64e3 / t:.0f}"
    print(f"TF32 explain at batch 64 [{model}/{comp}]: {ips(e)} images/s (FP32: {ips(e32)})")
EOF
    echo
    echo "ours/PyTorch: our predict over PyTorch's forward (target <= 1.2); Zennit/ours: Zennit's explain over ours"
    echo "(target >= 5); ours explain/predict (target <= 3); inputs (images, sequences) explained per second (VGG-16 EGB"
    echo "at batch 64: >= 1000 images/s). bilstm: 50 tokens a sequence, LRP-all (no Zennit rule): PyTorch's forward only."
    if [ -s "$out/tf32.txt" ]; then
        echo "+tf32 rows: TF32 products allowed (gpu_bench --tf32), against PyTorch's and Zennit's FP32-matmul timings."
    else
        local why
        why="$(grep -h 'SKIPPED' "$out/gpu_bench_tf32.log" 2>/dev/null | head -1)"
        echo "TF32 vs FP32: not measured (${why:-see $out/gpu_bench_tf32.log})"
    fi
    [ "$torch_ok" = 1 ] || echo "(no PyTorch/Zennit column: see above)"
    echo "logs: $out"
    if [ "$status" != 0 ]; then
        echo "== FAILED: a test binary or the benchmark failed (see the summary)"
    else
        echo "== OK in $((SECONDS - start)) s"
    fi
    return "$status"
}

# ---------------------------------------------------------------------------------------------
# dry-run: `run --emulated` from a copy in /tmp (proves DIR self-contained)
# ---------------------------------------------------------------------------------------------
dry_run() {
    local root src tmp rc
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    src="${1:-$root/target/gpu-check}"
    [ -x "$src/gpu_check.sh" ] && [ -d "$src/bin" ] || die "$src: not a built folder (gpu_check.sh build $src)"
    tmp="$(mktemp -d /tmp/gpu-check-dry.XXXXXX)"
    cp -r "$src/." "$tmp/"
    mkdir -p "${GPU_CHECK_OUT:=$src-dry-run}"
    export GPU_CHECK_OUT
    echo "== dry run of a copy of $src in $tmp (emulated device; no repository, no cargo); logs: $GPU_CHECK_OUT"
    (cd / && env -u CARGO_MANIFEST_DIR "$tmp/gpu_check.sh" run --emulated)
    rc=$?
    rm -rf "${tmp:?}"
    return "$rc"
}

case "${1:-}" in
    build) shift; build "$@" ;;
    run) shift; run "$@" ;;
    dry-run) shift; dry_run "$@" ;;
    _install-zennit) shift; install_zennit "$@" ;;
    -h | --help | help) usage 0 ;;
    *) usage 1 ;;
esac
