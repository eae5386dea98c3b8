#!/usr/bin/env bash
# Installs, idempotently, the npm packages the Kubernetes manifest tests validate with
# (kubernetes-models: the Kubernetes OpenAPI schemas; js-yaml to read the manifests) under DIR.
# Usage: scripts/setup-k8s-validator.sh DIR        (CTest runs it as a fixture setup)
set -euo pipefail
dir=${1:?usage: setup-k8s-validator.sh DIR}
mkdir -p "$dir"
if [ -f "$dir/node_modules/kubernetes-models/package.json" ] && [ -f "$dir/node_modules/js-yaml/package.json" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "setup-k8s-validator: installing nodejs and npm" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
[ -f "$dir/package.json" ] || echo '{"name": "orrery-k8s-validator", "private": true}' > "$dir/package.json"
echo "setup-k8s-validator: npm install kubernetes-models js-yaml into $dir" >&2
npm install --prefix "$dir" --no-audit --no-fund --loglevel=error kubernetes-models@5 js-yaml@4
