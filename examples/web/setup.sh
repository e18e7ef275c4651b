#!/usr/bin/env bash
# Installs onnxruntime-web (the version samplm's page pins) from the npm registry into examples/web, the
# folder the browser test (tests/test_web.py) and CI load it from: samplm web-setup --dir examples/web.
# The page itself ships in the package (samplm/export/web_page); outside a checkout run samplm web-setup.
# Run once: bash examples/web/setup.sh
set -euo pipefail
exec "${PYTHON:-python3}" -m samplm.cli web-setup --dir "$(cd "$(dirname "$0")" && pwd)"
