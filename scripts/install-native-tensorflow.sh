#!/usr/bin/env bash
# Installs @tensorflow/tfjs-node (finetune's `tensorflow` backend) without internet access to
# Google's servers: its own install step downloads libtensorflow 2.9.1 from storage.googleapis.com,
# which fails offline, and npm then drops the optional package. Here libtensorflow comes from the
# `tensorflow-cpu` Python wheel (pip, from the configured index), and tfjs-node's N-API binding is
# compiled against it with node-gyp.
#
#   scripts/install-native-tensorflow.sh            install (or check an earlier install), then verify
#   scripts/install-native-tensorflow.sh --remove   take node_modules/@tensorflow/tfjs-node out again
#
# Needs: Linux x86_64, Node.js headers for node-gyp (npm's `nodedir`, or <node prefix>/include/node),
# python3 with pip, g++, make, unzip; about 1.2 GB in the cache folder. Run after `npm ci`.
# Environment:
#   FINETUNE_TENSORFLOW_WHEEL   pip requirement for the wheel (default tensorflow-cpu==2.21.0)
#   FINETUNE_NATIVE_CACHE       where the libraries and packages are kept
#                               (default ${FINETUNE_HOME:-~/.cache/finetune}/native)
# Idempotent: a second run only verifies. Exits non-zero, saying what failed, when any step fails.
set -euo pipefail

say() { printf 'install-native-tensorflow: %s\n' "$*"; }
fail() {
  printf 'install-native-tensorflow: FAILED: %s\n' "$*" >&2
  exit 1
}
trap 'fail "a command above exited non-zero (line $LINENO)"' ERR

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
package_dir="$repo/node_modules/@tensorflow/tfjs-node"
marker="$package_dir/.finetune-native.json"

if [[ "${1:-}" == "--remove" ]]; then
  rm -rf "$package_dir"
  say "removed $package_dir (finetune's auto backend is wasm/webgpu again)"
  exit 0
fi
[[ $# -eq 0 ]] || { echo "usage: $0 [--remove]" >&2; exit 2; }

[[ "$(uname -s)-$(uname -m)" == "Linux-x86_64" ]] || fail "only Linux x86_64 is supported (the tensorflow-cpu wheel's libraries); this is $(uname -s)-$(uname -m)"
for tool in node npm python3 g++ make unzip; do
  command -v "$tool" >/dev/null || fail "$tool is missing: install it (Debian: apt-get install g++ make unzip python3-pip)"
done
[[ -d node_modules/@tensorflow/tfjs ]] || fail "node_modules/@tensorflow/tfjs is missing: run npm ci first"

wheel_req=${FINETUNE_TENSORFLOW_WHEEL:-tensorflow-cpu==2.21.0}
cache=${FINETUNE_NATIVE_CACHE:-${FINETUNE_HOME:-$HOME/.cache/finetune}/native}
# tfjs-node must be the version of finetune's @tensorflow/tfjs (it registers its backend on that engine).
tfjs_version=$(node -p "require('@tensorflow/tfjs/package.json').version")
napi_version=$(node -p "Math.min(8, Number(process.versions.napi))") # tfjs-node 4.22 builds N-API 3..8
mkdir -p "$cache"

verify() {
  # Loads tfjs-node from the repo (as finetune does), runs a conv2d on libtensorflow and on tfjs'
  # JavaScript kernels, and compares.
  TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2} node -e '
    const tf = require("@tensorflow/tfjs-node");
    const x = tf.randomUniform([2, 17, 17, 5], -1, 1, "float32", 1);
    const w = tf.randomUniform([3, 3, 5, 7], -1, 1, "float32", 2);
    const run = () => tf.conv2d(x, w, 2, "same").dataSync();
    const native = run();
    const backend = tf.backend();
    tf.setBackend("cpu");
    const js = run();
    let maxDiff = 0;
    for (let i = 0; i < js.length; i++) maxDiff = Math.max(maxDiff, Math.abs(js[i] - native[i]));
    if (!(maxDiff < 1e-4)) { console.error(`conv2d differs from tfjs cpu by ${maxDiff}`); process.exit(1); }
    console.log(`libtensorflow ${backend.binding.TF_Version}, device ${backend.isUsingGpuDevice ? "GPU" : "CPU"}, conv2d matches tfjs cpu (max diff ${maxDiff.toExponential(1)})`);
  '
}

if [[ -f "$marker" ]] && grep -q "\"tfjs\": \"$tfjs_version\"" "$marker" && grep -qF "\"wheel\": \"$wheel_req\"" "$marker"; then
  say "already installed ($(tr -d '\n ' <"$marker")); verifying"
  out=$(verify 2>"$cache/verify.log") || fail "the installed tfjs-node does not work: $(tail -n 5 "$cache/verify.log") (rerun after: $0 --remove)"
  say "ok: $out"
  exit 0
fi

# 1. libtensorflow from the tensorflow-cpu wheel: the shared libraries and the C API headers.
lib_name=$(echo "$wheel_req" | sed 's/[^A-Za-z0-9.]\{1,\}/-/g')
lib_dir="$cache/$lib_name"
if [[ ! -f "$lib_dir/.complete" ]]; then
  say "downloading the $wheel_req wheel with pip (about 270 MB)"
  wheels="$cache/wheels.tmp"
  rm -rf "$wheels" "$lib_dir.tmp"
  python3 -m pip download --no-deps --only-binary=:all: --quiet --retries 1 -d "$wheels" "$wheel_req" ||
    fail "pip could not download $wheel_req (a pip index with it must be reachable; set FINETUNE_TENSORFLOW_WHEEL to pin another version)"
  wheel=$(ls "$wheels"/*.whl)
  say "extracting libtensorflow_cc.so.2, libtensorflow_framework.so.2 and the C headers from $(basename "$wheel")"
  mkdir -p "$lib_dir.tmp"
  unzip -q "$wheel" 'tensorflow/libtensorflow_cc.so.2' 'tensorflow/libtensorflow_framework.so.2' \
    'tensorflow/include/tensorflow/c/*' -d "$lib_dir.tmp" ||
    fail "$(basename "$wheel") lacks libtensorflow_cc.so.2, libtensorflow_framework.so.2 or the C headers"
  # The headers the C API includes, and those they include, one missing file at a time (they move
  # between TensorFlow versions: tensorflow/core/platform, tsl/platform, xla/tsl/c, …).
  for _ in $(seq 1 40); do
    missing=$(printf '#include "tensorflow/c/c_api.h"\n#include "tensorflow/c/eager/c_api.h"\n#include "tensorflow/core/platform/ctstring_internal.h"\n' |
      g++ -x c++ -E -I "$lib_dir.tmp/tensorflow/include" - -o /dev/null 2>&1 | sed -n 's/^.*[: ]\([^ :]*\.h\): No such file.*$/\1/p' | head -n 1 || true)
    [[ -z "$missing" ]] && break
    unzip -q "$wheel" "tensorflow/include/$missing" -d "$lib_dir.tmp" || fail "the wheel lacks tensorflow/include/$missing, which the C API headers include"
  done
  [[ -z "$missing" ]] || fail "the C API headers still miss $missing after 40 rounds"
  nm -D --defined-only "$lib_dir.tmp/tensorflow/libtensorflow_cc.so.2" | awk '$3 ~ /^TFE?_/ { sub(/@.*/, "", $3); print $3 }' >"$lib_dir.tmp/c-api-symbols.txt"
  for symbol in TFE_NewContext TFE_ContextListDevices TFE_Execute TF_LoadSessionFromSavedModel TF_Version; do
    grep -qx "$symbol" "$lib_dir.tmp/c-api-symbols.txt" ||
      fail "libtensorflow_cc.so.2 of $wheel_req does not export $symbol, which tfjs-node's binding calls: pin another version with FINETUNE_TENSORFLOW_WHEEL"
  done
  rm -rf "$lib_dir" && mv "$lib_dir.tmp/tensorflow" "$lib_dir" && rm -rf "$lib_dir.tmp" "$wheels"
  touch "$lib_dir/.complete"
else
  say "libtensorflow: using $lib_dir"
fi

# 2. tfjs-node, built once per (tfjs-node version, wheel, N-API version) in the cache, then copied
#    into node_modules: a fresh clone (CI) only copies it.
built="$cache/tfjs-node-$tfjs_version-$lib_name-napi$napi_version"
if [[ ! -f "$built/.complete" ]]; then
  tarball="$cache/tensorflow-tfjs-node-$tfjs_version.tgz"
  if [[ ! -f "$tarball" ]]; then
    say "fetching @tensorflow/tfjs-node@$tfjs_version from the npm registry"
    (cd "$cache" && npm pack --silent "@tensorflow/tfjs-node@$tfjs_version" >/dev/null) || fail "npm pack @tensorflow/tfjs-node@$tfjs_version failed"
  fi
  rm -rf "$built" "$built.tmp"
  mkdir -p "$built.tmp"
  say "unpacking @tensorflow/tfjs-node@$tfjs_version"
  tar xzf "$tarball" -C "$built.tmp" --strip-components=1
  # Its dependencies, without install scripts, but @tensorflow/tfjs: that must resolve to finetune's
  # own copy (tfjs-node registers its backend on that engine).
  deps=$(node -p "Object.entries(require('$built.tmp/package.json').dependencies).filter(([n]) => n !== '@tensorflow/tfjs').map(([n, v]) => n + '@' + v).join(' ')")
  say "installing its dependencies: $deps"
  # (In a folder of their own: npm install inside the package would add its devDependencies too.)
  rm -rf "$built.deps" && mkdir -p "$built.deps" && echo '{"private": true}' >"$built.deps/package.json"
  # shellcheck disable=SC2086
  (cd "$built.deps" && npm install --silent --ignore-scripts --no-audit --no-fund --no-package-lock $deps) ||
    fail "npm install of tfjs-node's dependencies failed"
  mv "$built.deps/node_modules" "$built.tmp/node_modules" && rm -rf "$built.deps"
  # deps/ as tfjs-node's binding.gyp expects it: headers, and -ltensorflow -ltensorflow_framework. The
  # libraries stay in the cache (850 MB); the binding finds them through deps/lib (its rpath).
  mkdir -p "$built.tmp/deps/lib"
  cp -r "$lib_dir/include" "$built.tmp/deps/include"
  ln -s "$lib_dir/libtensorflow_cc.so.2" "$built.tmp/deps/lib/libtensorflow_cc.so.2"
  ln -s "$lib_dir/libtensorflow_framework.so.2" "$built.tmp/deps/lib/libtensorflow_framework.so.2"
  ln -s libtensorflow_cc.so.2 "$built.tmp/deps/lib/libtensorflow.so"
  ln -s libtensorflow_framework.so.2 "$built.tmp/deps/lib/libtensorflow_framework.so"

  # What `node-pre-gyp install --build-from-source` runs, for one N-API version, with local Node headers.
  node_gyp=$(npm config get node-gyp 2>/dev/null || true)
  if [[ -z "$node_gyp" || "$node_gyp" == "undefined" || ! -f "$node_gyp" ]]; then
    node_gyp="$(dirname "$(dirname "$(realpath "$(command -v npm)")")")/node_modules/node-gyp/bin/node-gyp.js"
  fi
  [[ -f "$node_gyp" ]] || fail "node-gyp not found (npm ships it; set npm config node-gyp to its bin/node-gyp.js)"
  nodedir=$(npm config get nodedir 2>/dev/null || true)
  if [[ -z "$nodedir" || "$nodedir" == "undefined" || "$nodedir" == "null" ]]; then
    nodedir=$(dirname "$(dirname "$(realpath "$(command -v node)")")")
  fi
  [[ -f "$nodedir/include/node/node_api.h" ]] ||
    fail "Node.js headers not found in $nodedir/include/node (node-gyp would download them, which needs internet): install them or set npm config nodedir"
  say "compiling tfjs-node's N-API $napi_version binding against it with node-gyp (about a minute)"
  log="$cache/build.log"
  (cd "$built.tmp" && node "$node_gyp" rebuild --nodedir="$nodedir" --module_name=tfjs_binding \
    --module_path="$built.tmp/lib/napi-v$napi_version" --napi_build_version="$napi_version" >"$log" 2>&1) ||
    fail "node-gyp could not build the binding; the last lines of $log: $(tail -n 15 "$log")"
  rm -rf "$built.tmp/build" # the objects; the binding was copied to lib/napi-v$napi_version
  printf '{\n  "tfjs": "%s",\n  "wheel": "%s",\n  "libtensorflow": "%s",\n  "napi": %s\n}\n' \
    "$tfjs_version" "$wheel_req" "$lib_dir" "$napi_version" >"$built.tmp/.finetune-native.json"
  mv "$built.tmp" "$built"
  touch "$built/.complete"
else
  say "tfjs-node: using the binding built in $built"
fi

say "copying it to node_modules/@tensorflow/tfjs-node"
rm -rf "$package_dir"
cp -a "$built" "$package_dir"
rm "$package_dir/.complete"

say "verifying"
out=$(verify 2>"$cache/verify.log") || fail "the installed tfjs-node does not work: $(tail -n 5 "$cache/verify.log")"
say "ok: $out"
say "installed node_modules/@tensorflow/tfjs-node; finetune's --backend tensorflow (and auto) now use it"
