#!/usr/bin/env bash
# Build the extension modules in place (for development), one build at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
exec flock /tmp/cyconv-build.lock python setup.py -q build_ext --inplace "$@"
