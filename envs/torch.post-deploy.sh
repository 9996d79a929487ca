#!/usr/bin/env bash
# facenet-pytorch pins torch<2.3 and numpy<2, so it goes in without its dependencies; then this package.
set -euo pipefail
pip install --no-deps facenet-pytorch==2.6.0
pip install --no-deps -e "$(dirname "$0")/.."
