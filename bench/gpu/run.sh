#!/usr/bin/env bash
# GPU proof in one go, on a host with an NVIDIA GPU and no network:
#   1. places the CUDA execution provider offline from PROVIDER (the asus4 .tgz, a NuGet .nupkg, or a
#      folder with the two libraries, .zst allowed) into this checkout's onnxruntime-node;
#   2. adds the lib folders of PyTorch's nvidia-* wheels (CUDA 13 runtime, cuBLAS, cuDNN 9) to
#      LD_LIBRARY_PATH when the loader cannot find those libraries otherwise (the doctor finds them);
#   3. runs the doctor, which must end with "CUDA binds";
#   4. runs bench/gpu/gpu-proof.ts (strict CUDA, CPU comparison, images/s at batch 1, 8, 32, GPU memory)
#      and writes its markdown table to OUT_DIR/gpu-proof.md and the figures to OUT_DIR/gpu-proof.json;
#   5. runs bench/inference with the CUDA provider (the worker path with its decode threads against a
#      bare session.run on the GPU) into OUT_DIR/inference-gpu.txt.
#
# Usage: [DEVICE=N] bench/gpu/run.sh PROVIDER [OUT_DIR] [-- gpu-proof options, e.g. --models DIR]
# (--cpu-only among the options: a dry run without a GPU; the doctor's verdict does not stop it.)
# Needs node_modules in place (ONNXRUNTIME_NODE_INSTALL=skip npm ci, or carried) and the models: either
# ../shared/models next to the checkout or --models DIR laid out as models/<id>/<file>.onnx.
set -euo pipefail
cd "$(dirname "$0")/../.."

provider=${1:?usage: bench/gpu/run.sh PROVIDER [OUT_DIR] [-- gpu-proof options]}
shift
out=${OUT_DIR:-.}
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
  out=$1
  shift
fi
[ "${1:-}" = "--" ] && shift
mkdir -p "$out"
device=${DEVICE:-0}

tsx() { node --import tsx "$@"; }

echo "== install the CUDA provider from $provider"
tsx scripts/install-cuda-provider.ts --from "$provider"

echo "== library folders the loader cannot see yet"
extra=$(tsx bench/gpu/doctor.ts --json --device "$device" | node -e '
  let s = "";
  process.stdin.on("data", (c) => (s += c)).on("end", () => console.log(JSON.parse(s).addToLdLibraryPath.join(":")));
') || true
if [ -n "$extra" ]; then
  export LD_LIBRARY_PATH="$extra${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
fi

echo "== doctor"
if [[ " $* " == *" --cpu-only "* ]]; then
  # A dry run on a machine without a GPU: report, but do not stop at the verdict.
  tsx bench/gpu/doctor.ts --device "$device" | tee "$out/doctor.txt" || true
else
  tsx bench/gpu/doctor.ts --device "$device" | tee "$out/doctor.txt"
fi

echo "== gpu proof"
tsx bench/gpu/gpu-proof.ts --device "$device" --json "$out/gpu-proof.json" "$@" | tee "$out/gpu-proof.md"

if [[ " $* " != *" --cpu-only "* ]]; then
  echo "== worker path on the GPU (decode threads, micro-batcher, strict CUDA) against bare session.run"
  tsx bench/inference/run.ts --provider cuda --images 256 --batch 32 | tee "$out/inference-gpu.txt" || true
fi
