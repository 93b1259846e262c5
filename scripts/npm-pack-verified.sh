#!/usr/bin/env bash
# Downloads one npm package tarball into DIR and checks its SHA-256; prints the tarball's path.
# Usage: scripts/npm-pack-verified.sh PACKAGE VERSION SHA256 DIR   (the fetch-*.sh scripts use it)
set -euo pipefail
package="$1"; version="$2"; sha256="$3"; dir="$4"
name="$(basename "$0")"
command -v npm >/dev/null || { echo "$name: npm is needed to fetch $package@$version (apt install npm)" >&2; exit 1; }
(cd "$dir" && npm pack --silent "$package@$version" >/dev/null) || { echo "$name: npm pack $package@$version failed" >&2; exit 1; }
tgz="$(ls "$dir"/*.tgz)"
actual="$(sha256sum "$tgz" | cut -d' ' -f1)"
if [ "$actual" != "$sha256" ]; then
  echo "$name: checksum mismatch for $package@$version (expected $sha256, got $actual)" >&2; exit 1
fi
echo "$tgz"
