#!/usr/bin/env bash
# Builds .device/ (git-ignored), what bench/gpu-device.sh needs on a machine with a GPU and
# no Node and no network (the device tool's: name .device in `carry`): this machine's Node,
# xz-compressed; node_modules/webgpu (Dawn) for linux-x64 only; the Vulkan loader package
# (libvulkan1, amd64) from Debian; the device check bundled into one file
# (bench/gpu-device.ts, the library and its wasm inside). The fixtures are in the working
# tree (test/fixtures), which travels anyway. Run from anywhere, after `npm ci`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pack=$root/.device
cd "$root"
rm -rf "$pack"
mkdir -p "$pack/debs"

xz -T2 -6 -c "$(command -v node)" > "$pack/node.xz"
tar -cJf "$pack/webgpu.tar.xz" node_modules/webgpu/package.json node_modules/webgpu/index.js node_modules/webgpu/LICENSE.md \
  node_modules/webgpu/dist/linux-x64
npx esbuild bench/gpu-device.ts --bundle --platform=node --format=esm --target=node20 --external:webgpu \
  --outfile="$pack/gpu-device.mjs" --log-level=warning

# The loader, for the architecture of the device machine whatever this one's (the device README's way).
lists=$(mktemp -d)
mkdir -p "$lists/partial"
apt=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
apt-get "${apt[@]}" update -qq
(cd "$pack/debs" && apt-get "${apt[@]}" download -qq libvulkan1)
rm -rf "$lists"
du -sh "$pack" "$pack"/* | sed 's/^/  /'
