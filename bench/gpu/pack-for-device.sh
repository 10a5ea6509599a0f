#!/usr/bin/env bash
# Packs what bench/gpu/run.sh needs on a bare, offline GPU machine that receives files in limited
# pieces (this project's device machine: no Node installed, 64 MiB per transfer): the CUDA provider
# package as downloaded (its sha1 is npm's), this machine's Node binary, the few node_modules the GPU
# proof uses (onnxruntime-node for linux-x64 only, onnxruntime-common, tsx, esbuild) and the model files.
# All of it goes into one tar, cut into parts of CHUNK_MB; unpack-on-device.sh puts them back together.
#
# Usage: bench/gpu/pack-for-device.sh PROVIDER.tgz DEST [CHUNK_MB]
#   PROVIDER.tgz  npm pack com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9
#   DEST          a folder git ignores (e.g. .gpu-bundle, listed in .git/info/exclude)
set -euo pipefail
cd "$(dirname "$0")/../.."

provider=$(realpath "${1:?usage: pack-for-device.sh PROVIDER.tgz DEST [CHUNK_MB]}")
dest=${2:?usage: pack-for-device.sh PROVIDER.tgz DEST [CHUNK_MB]}
chunk=${3:-60}
shared=${SHARED_MODELS:-../shared/models}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bundle" "$dest"
rm -f "$dest"/part-* "$dest"/bundle.sha256

cp "$provider" "$stage/bundle/provider.tgz"
gzip -9 -c "$(command -v node)" >"$stage/bundle/node.gz"

# node_modules subset: no other platforms' onnxruntime binaries (they are most of its 280 MB).
tar -czf "$stage/bundle/runtime.tar.gz" \
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/darwin' \
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/win32' \
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/linux/arm64' \
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_*' \
  node_modules/onnxruntime-node node_modules/onnxruntime-common node_modules/tsx node_modules/esbuild \
  node_modules/@esbuild/linux-x64

# Models as models/<id>/<file>, for gpu-proof --models.
mkdir -p "$stage/models/squeezenet1_1-cxr-pneumonia" "$stage/models/meshnet-brain-gwm/sample"
cp -L "$shared/squeezenet1_1-cxr-pneumonia/squeezenet1_1_cxr.onnx" "$stage/models/squeezenet1_1-cxr-pneumonia/"
cp -L "$shared/meshnet-brain-gwm/"*.onnx "$stage/models/meshnet-brain-gwm/"
cp -L "$shared/meshnet-brain-gwm/sample/t1_crop.nii.gz" "$stage/models/meshnet-brain-gwm/sample/"
tar -czf "$stage/bundle/models.tar.gz" -C "$stage" models

tar -cf "$stage/bundle.tar" -C "$stage/bundle" .
(cd "$stage" && sha256sum bundle.tar) >"$dest/bundle.sha256"
split -b "${chunk}M" -d -a 2 "$stage/bundle.tar" "$dest/part-"
ls -l "$dest"
echo "$(ls "$dest"/part-* | wc -l) parts of at most $chunk MiB; see docs/gpu.md for moving them to the device"
