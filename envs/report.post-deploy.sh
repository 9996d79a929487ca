#!/usr/bin/env bash
# This package, without dependencies (the env pins them).
set -euo pipefail
pip install --no-deps -e "$(dirname "$0")/.."
