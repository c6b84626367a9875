#!/usr/bin/env bash
# Kept for the README's command: the one GPU script is run_gpu.sh (SPP + RoI SPP).
exec "$(dirname "$0")/run_gpu.sh" "$@"
