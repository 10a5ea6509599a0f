#!/usr/bin/env bash
# The other half of pack-for-device.sh, on the GPU machine.
#   bench/gpu/unpack-on-device.sh add PART        append one part to STAGE/bundle.tar (one call per part)
#   bench/gpu/unpack-on-device.sh run SHA256FILE OUT_DIR [gpu-proof options]
#       checks the whole tar against the sha256 made when packing, unpacks Node, node_modules and the
#       models, and runs bench/gpu/run.sh with the provider package (strict CUDA proof).
# STAGE is $GPU_STAGE or /tmp/gpu-stage: it must outlive the calls, so it lies outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/../.."
stage=${GPU_STAGE:-/tmp/gpu-stage}
mkdir -p "$stage"

case "${1:-}" in
  add)
    part=${2:?usage: unpack-on-device.sh add PART}
    cat "$part" >>"$stage/bundle.tar"
    echo "bundle.tar now $(stat -c %s "$stage/bundle.tar") bytes"
    ;;
  run)
    sums=$(realpath "${2:?usage: unpack-on-device.sh run SHA256FILE OUT_DIR [options]}")
    out=${3:?usage: unpack-on-device.sh run SHA256FILE OUT_DIR [options]}
    shift 3
    (cd "$stage" && sha256sum -c "$sums")
    mkdir -p "$stage/x" "$stage/bin"
    tar -xf "$stage/bundle.tar" -C "$stage/x"
    gunzip -c "$stage/x/node.gz" >"$stage/bin/node"
    chmod +x "$stage/bin/node"
    export PATH="$stage/bin:$PATH"
    tar -xzf "$stage/x/runtime.tar.gz"
    tar -xzf "$stage/x/models.tar.gz" -C "$stage"
    node --version
    bench/gpu/run.sh "$stage/x/provider.tgz" "$out" -- --models "$stage/models" "$@"
    ;;
  *)
    echo "usage: unpack-on-device.sh add PART | run SHA256FILE OUT_DIR [gpu-proof options]" >&2
    exit 2
    ;;
esac
