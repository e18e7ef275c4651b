#!/usr/bin/env bash
# Installs onnxruntime-web from the npm registry into examples/web/node_modules (the page loads it from
# there, never from a CDN). Run once: bash examples/web/setup.sh
set -euo pipefail
cd "$(dirname "$0")"
npm install --no-audit --no-fund --loglevel=error
