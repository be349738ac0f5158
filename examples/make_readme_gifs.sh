#!/usr/bin/env bash
# Make the two GIFs of docs/movies.md with the shipped default model (latenttune/data/default_model.pt):
#   docs/media/traverse.gif  a smooth closed walk through the model's latent space
#   docs/media/tracking.gif  a simulated growing crystal tracked by the default (hybrid) tracker
# Both are 480x270 px with 48 frames, well under 2 MB each. Run from anywhere; about 2-4 minutes on
# a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/media
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

latenttune movie traverse --model default --path lissajous --frames 48 --seed 0 --cycles 2 \
    --size 480x270 --fps 10 --out docs/media/traverse.gif --overwrite

latenttune track --model default --scenario growth --frames 48 --seed 0 --no-figure \
    --out "$work/tracking.h5"
latenttune movie track "$work/tracking.h5" --size 480x270 --fps 8 --out docs/media/tracking.gif --overwrite

ls -l docs/media/traverse.gif docs/media/tracking.gif
