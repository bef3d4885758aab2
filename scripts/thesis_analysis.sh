#!/usr/bin/env bash
# Reproduces the README's danceability analysis: one cpu_small model per conditioning
# (none, encoder, latent, decoder) on the 4-bar folk-small windows, the attribute vector
# for the unconditioned model, then `musicvae analyze` on the shared test split.
# Danceability (the models' c) is the `rhythm` estimate of each tune, the scale the analysis
# measures control on; DANCEABILITY=labels uses the dance-type labels instead.
# About 7 minutes per model on 2 idle CPU cores. Usage: scripts/thesis_analysis.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/analysis}"
steps="${STEPS:-2000}"
source="${DANCEABILITY:-rhythm}"
mkdir -p "$out"
if [ ! -f "$out/data/manifest.json" ]; then
  musicvae data build corpus:folk-small --representation melody90 --bars 4 \
    --danceability "$source" --out "$out/data"
fi
for c in none encoder latent decoder; do
  if [ -d "$out/$c/checkpoints/$steps" ]; then
    echo "$out/$c: step $steps already trained"
  elif [ -d "$out/$c/checkpoints" ]; then
    musicvae train --data "$out/data" --workdir "$out/$c" --resume
  else
    musicvae train --config cpu_small --data "$out/data" --workdir "$out/$c" \
      --set name="folk4-$c" --set model.conditioning="$c" --set train.num_steps="$steps"
  fi
done
musicvae attribute-vector --checkpoint "$out/none" --data "$out/data"
musicvae analyze --checkpoints "$out/none" "$out/encoder" "$out/latent" "$out/decoder" \
  --data "$out/data" --out "$out/results" --max-windows 512 --samples-per-value 32 \
  --edit-windows 64
