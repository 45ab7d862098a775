#!/usr/bin/env bash
# Refresh the vendored onnxruntime-web files of the latent lens component
# (app/lens/frontend/vendor/onnxruntime-web/) from the npm registry, recompute their
# sha256s and rewrite VENDOR.md. Idempotent: when the files come out byte-identical,
# VENDOR.md (and its date) is left as it was.
#
#   bash scripts/vendor_onnxruntime_web.sh            # the pinned version below
#   ORT_WEB_VERSION=1.31.0 bash scripts/vendor_onnxruntime_web.sh
#
# Needs npm (only `npm pack`: no node_modules, no install scripts run). What is kept: the
# wasm-only ES-module bundle (ort.wasm.bundle.min.mjs: the JS API with the Emscripten glue
# inlined, one file) and the one WebAssembly binary it loads (ort-wasm-simd-threaded.wasm;
# the component runs it single-threaded). The WebGPU/WebGL/JSPI builds and source maps are
# not vendored.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${ORT_WEB_VERSION:-1.30.0}
DEST=app/lens/frontend/vendor/onnxruntime-web
FILES=(ort.wasm.bundle.min.mjs ort-wasm-simd-threaded.wasm)

command -v npm >/dev/null || { echo "npm is needed (apt-get install npm)" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --json --silent "onnxruntime-web@$VERSION" > pack.json)
TARBALL=$(cd "$TMP" && python3 -c "import json; print(json.load(open('pack.json'))[0]['filename'])")
INTEGRITY=$(cd "$TMP" && python3 -c "import json; print(json.load(open('pack.json'))[0]['integrity'])")
tar -xzf "$TMP/$TARBALL" -C "$TMP"
GOT=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['version'])" "$TMP/package/package.json")
LICENCE=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['license'])" "$TMP/package/package.json")
[ "$GOT" = "$VERSION" ] || { echo "npm gave onnxruntime-web $GOT, wanted $VERSION" >&2; exit 1; }

STAGE="$TMP/stage"
mkdir -p "$STAGE"
for f in "${FILES[@]}"; do cp "$TMP/package/dist/$f" "$STAGE/$f"; done
# The npm package carries no licence file; this is onnxruntime's LICENSE (MIT), verbatim.
cat > "$STAGE/LICENSE" <<'LICENCE_TEXT'
MIT License

Copyright (c) Microsoft Corporation

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
LICENCE_TEXT

table() {  # the sha256 table of the staged files (the part of VENDOR.md that must match)
  (cd "$STAGE" && for f in "${FILES[@]}" LICENSE; do
     printf '| `%s` | %s | `%s` |\n' "$f" "$(wc -c < "$f" | tr -d ' ')" "$(sha256sum "$f" | cut -d' ' -f1)"
   done)
}
TABLE=$(table)
if [ -f "$DEST/VENDOR.md" ] && grep -qF "onnxruntime-web $VERSION" "$DEST/VENDOR.md" \
   && [ "$(grep '^| `' "$DEST/VENDOR.md")" = "$TABLE" ] \
   && (cd "$DEST" && sha256sum --quiet -c <(cd "$STAGE" && sha256sum "${FILES[@]}" LICENSE)) \
   && [ "$(ls -A "$DEST" | sort)" = "$(printf '%s\n' "${FILES[@]}" LICENSE VENDOR.md | sort)" ]; then
  echo "onnxruntime-web $VERSION: vendored files already up to date"
  exit 0
fi

rm -rf "$DEST"
mkdir -p "$DEST"
cp "$STAGE"/* "$DEST/"
cat > "$DEST/VENDOR.md" <<MD
# Vendored: onnxruntime-web $VERSION

- Package: [onnxruntime-web](https://www.npmjs.com/package/onnxruntime-web) $VERSION
  (npm tarball \`$TARBALL\`, integrity \`$INTEGRITY\`)
- Licence: $LICENCE (\`LICENSE\`, onnxruntime's licence text; the npm package ships none).
  The WebAssembly binary also contains third-party code (Emscripten runtime, Eigen,
  protobuf-lite, abseil, flatbuffers, ...): their notices are in onnxruntime's
  \`ThirdPartyNotices.txt\` (https://github.com/microsoft/onnxruntime/blob/v$VERSION/ThirdPartyNotices.txt).
- Vendored on: $(date -u +%Y-%m-%d) by \`scripts/vendor_onnxruntime_web.sh\` (rerun it to
  refresh; set \`ORT_WEB_VERSION\` for another version). Files are copied unmodified
  from the tarball's \`dist/\`.
- Used by: \`app/lens/frontend/lens.js\` (imports the bundle lazily after first paint; the
  bundle fetches the \`.wasm\` next to it; \`ort.env.wasm.numThreads = 1\`).

| file | bytes | sha256 |
|---|---|---|
$TABLE
MD
echo "onnxruntime-web $VERSION vendored into $DEST:"
cat "$DEST/VENDOR.md" | grep '^| `'
