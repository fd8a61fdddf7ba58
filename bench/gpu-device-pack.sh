#!/usr/bin/env bash
# Builds .device/ (git-ignored), what bench/gpu-device.sh needs on a machine with a GPU and
# no Node and no network (the device tool's: name .device in `carry`): this machine's Node,
# xz-compressed; node_modules/webgpu (Dawn) for linux-x64 only; the Vulkan loader package
# (libvulkan1, amd64) from Debian; the device check bundled into one file
# (bench/gpu-device.ts, the library and its wasm inside); and the smaller shared fixtures.
# Run from anywhere, after `npm ci`; about 47 MB, under the tool's 64 MiB with the tree.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pack=$root/.device
fixtures=${HYPERATTENTION_FIXTURES:-$root/../shared/fixtures}
cd "$root"
rm -rf "$pack"
mkdir -p "$pack/debs" "$pack/fixtures"

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

# The fixtures (18 MB today): the pack stays under the 64 MiB limit with the tree. A larger
# fixture would not, and stays behind.
for dir in "$fixtures"/*/; do
  [ -f "$dir/case.json" ] || continue
  [ "$(du -sk "$dir" | cut -f1)" -le 5120 ] && cp -r "$dir" "$pack/fixtures/"
done
du -sh "$pack" "$pack"/* | sed 's/^/  /'
