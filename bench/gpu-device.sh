#!/usr/bin/env bash
# The device check in one command, for a Linux machine with an NVIDIA GPU and no Node and
# no network (the device tool's): unpacks .device/ (made here by bench/gpu-device-pack.sh
# and carried there), runs bench/gpu-device.ts (bundled) under the carried Node, and leaves
# gpu-correctness.json, gpu-kernels.json, gpu-e2e.json, gpu-scheduler.json and
# gpu-device.log in OUTDIR. It refuses a software adapter unless
# HYPERATTENTION_ALLOW_FALLBACK=1 (a dry run; HYPERATTENTION_DEVICE_SIZES=small shrinks it).
#   bench/gpu-device.sh OUTDIR        e.g. in the device tool: bench/gpu-device.sh $OUT
set -euo pipefail
out=${1:?usage: bench/gpu-device.sh OUTDIR}
root=$(cd "$(dirname "$0")/.." && pwd)
pack=$root/.device
[ -f "$pack/gpu-device.mjs" ] || { echo "no $pack/gpu-device.mjs: run bench/gpu-device-pack.sh first (and carry .device)"; exit 2; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The carried Node, whatever the machine has, so that a dry run here tests what runs there.
xz -dc "$pack/node.xz" > "$work/node"
chmod +x "$work/node"
tar -xJf "$pack/webgpu.tar.xz" -C "$work"
cp "$pack/gpu-device.mjs" "$work/"

# The Vulkan loader, where the machine has none: into / as root (the device README's way),
# else beside the rest.
if ! ldconfig -p | grep -q 'libvulkan\.so\.1'; then
  if [ "$(id -u)" = 0 ]; then
    for f in "$pack"/debs/*.deb; do dpkg -x "$f" /; done
    ldconfig
  else
    for f in "$pack"/debs/*.deb; do dpkg -x "$f" "$work/root"; done
    export LD_LIBRARY_PATH=$work/root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  fi
fi
# NVIDIA's driver manifest, where the container put it outside the loader's search path.
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_ICD_FILENAMES:-}${VK_DRIVER_FILES:-}" ] && [ -f "$nvidia_icd" ]; then export VK_DRIVER_FILES=$nvidia_icd; fi

command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "no nvidia-smi"
export HYPERATTENTION_BENCH_RESULTS=$out
# The fixtures travel with the working tree; the bundle runs from elsewhere, so it is told.
export HYPERATTENTION_FIXTURES=${HYPERATTENTION_FIXTURES:-$root/test/fixtures}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$work}
cd "$work"
set +e
"$work/node" --experimental-wasm-relaxed-simd gpu-device.mjs 2>&1 | tee "$out/gpu-device.log"
status=${PIPESTATUS[0]}
echo "exit $status; results in $out:"
ls -l "$out"
exit "$status"
