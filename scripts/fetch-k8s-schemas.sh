#!/usr/bin/env bash
# Installs the published typed schemas that the strict validation of k8s/ checks against (k8s/schema: TypeScript,
# kubernetes-models for core kinds, @kubernetes-models/* for the Strimzi, CloudNativePG, KEDA and prometheus-operator
# CRDs) with `npm ci`: exact versions and sha512 integrity from k8s/schema/package-lock.json. Prints the directory.
# Safe to run repeatedly; it does nothing when the installed tree matches the lock file.
set -euo pipefail
dir="$(cd "$(dirname "$0")/../k8s/schema" && pwd)"
command -v npm >/dev/null || { echo "fetch-k8s-schemas.sh: npm is needed (apt install npm)" >&2; exit 1; }
stamp="$dir/node_modules/.deepserve-lock.sha256"
want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null) \
    || { echo "fetch-k8s-schemas.sh: npm ci in $dir failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
echo "$dir"
