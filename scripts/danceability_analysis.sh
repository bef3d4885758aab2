#!/usr/bin/env bash
# Reproduces the README's danceability-control table (docs/danceability-control.md):
# on the 4-bar folk-small windows, with the same cpu_small recipe and step budget,
#   - the thesis's three conditionings as they are (encoder, latent, decoder; c = the
#     song's rhythm estimate),
#   - the unconditioned model with the paper's attribute vector (contrast) and with the
#     training-free baseline (ridge-regression direction, step calibrated by decoding),
#     and again with seeds 1 and 2 (each seed of the sign model is compared with the
#     unregularised model of its own seed),
#   - the decoder conditioning given the window's own rhythm estimate, with the rest of
#     z decorrelated from it (a linear Fader-style penalty);
#   - attribute regularisation of one latent dimension on the window's own rhythm
#     estimate: regression, regression + decorrelation, sign (AR-VAE) + decorrelation
#     (the core of cpu_small's recipe), and the sign one again with seeds 1 and 2;
#   - the sign model with the rest of z kept free of danceability by a kernel
#     independence penalty, and by an adversary with gradient reversal (weight 1; and
#     weight 3 reached by a ramp over the first 1,500 steps; two and three seeds);
#   - the sign model with a rhythm decoder (note-ons decoded from z's first 16
#     dimensions and read by the core decoder), alone and with the ramped adversary
#     bounded to +-3 (cpu_small's recipe; three seeds each);
# then every attribute-regularised model again (a copy, NAME-map) with its danceability
# map (`musicvae danceability-map`: requests turned into codes by decoding training
# windows), and `musicvae analyze` of all of them on the shared test split:
# results/ (decoded once), results_refined/ (one decode-encode round of the generated and
# edited melodies), and for the mapped models, with one round and requests emphasised
# EMPHASIS times (default 2, chosen on the validation split) around the training median:
# results_emphasis/ (edits decoded as they are) and results_controlled/ (edits keeping
# the source's tokens where the request changes nothing: `musicvae edit`'s default), and
# the last again decoded once, without the round: results_controlled_once/; and the
# models with a rhythm decoder asked as `musicvae` asks them by default, each request
# aimed per code with the rhythm decoder (`--aim`; one round, EMPHASIS, kept source
# tokens): results_aimed/.
# Usage: scripts/danceability_analysis.sh OUT [STEPS]   (STEPS per model, default 3000;
# a small number such as 50 checks the pipeline end to end: four models with JOBS=2 took
# 12 minutes from a fresh clone, the corpus's conversion included).
# JOBS=2 trains two models at a time (one core each); 8-10 minutes per model per core
# at 3000 steps on this project's 2-core machines (the 18 models of session 13 took
# about 80 minutes with JOBS=2 and 30 minutes of analysis; the 24 now, estimated from
# that, about 110 and 40).
# BARS=16 runs the same experiment at the thesis's length (cpu_16bar, 16-bar windows);
# MODELS="none ar-sign-decorrelated ..." trains and analyses only the models named.
set -euo pipefail
out="${1:?usage: scripts/danceability_analysis.sh OUT [STEPS]}"
out="$(realpath -m "$out")"  # OUT is relative to where the script is run, not to the repo
cd "$(dirname "$0")/.."
steps="${2:-3000}"
jobs="${JOBS:-1}"
bars="${BARS:-4}"
case "$bars" in
  4) config=cpu_small ;;
  16) config=cpu_16bar ;;
  *) echo "BARS must be 4 or 16, not $bars" >&2; exit 2 ;;
esac
mkdir -p "$out"
if [ ! -f "$out/data/manifest.json" ]; then
  musicvae data build corpus:folk-small --representation melody90 --bars "$bars" \
    --danceability rhythm --out "$out/data"
fi

# cpu_small regularises latent dimension 0 (sign loss + decorrelation, window level);
# each recipe states all three settings, so the table does not depend on that default
# (nor on whether it has an adversary or a rhythm decoder: every model starts without
# them, and the recipes that use them add them). Everything else is cpu_small's
# (optimiser included).
base="--set loss.attribute_adversary=0 --set model.adversary_hidden=0 --set model.adversary_bound=0 --set model.rhythm_hidden=0"
song="--set data.danceability=song --set loss.attribute_loss=none --set loss.attribute_decorrelation=0"
window="--set data.danceability=window --set model.conditioning=none"
sign="--set loss.attribute_loss=sign --set loss.attribute_decorrelation=1"
ramp="--set loss.attribute_loss=sign --set loss.attribute_decorrelation=1 --set model.adversary_hidden=64 --set loss.attribute_adversary=3 --set loss.attribute_adversary_ramp=1500"
# The rhythm decoder (EC2-VAE style): note-ons decoded from z's first 16 dimensions
# (dimension 0, the regularised one, among them) and read by the core decoder.
rhythm="--set model.rhythm_hidden=128"
# With it, the unbounded adversary's reversed ascent diverged (seed 0: KL 250 -> 196,000
# bits between steps 1,600 and 1,700); its prediction bounded to +-3 cannot be driven so.
bounded="--set model.adversary_bound=3"
declare -A recipes=(
  [encoder]="$song --set model.conditioning=encoder"
  [latent]="$song --set model.conditioning=latent"
  [decoder]="$song --set model.conditioning=decoder"
  [none]="$song --set model.conditioning=none"
  [none-seed1]="$song --set model.conditioning=none --set train.seed=1"
  [none-seed2]="$song --set model.conditioning=none --set train.seed=2"
  [decoder-window-decorrelated]="--set model.conditioning=decoder --set data.danceability=window --set loss.attribute_loss=none --set loss.attribute_decorrelation=1"
  [ar-regression]="$window --set loss.attribute_loss=regression --set loss.attribute_decorrelation=0"
  [ar-regression-decorrelated]="$window --set loss.attribute_loss=regression --set loss.attribute_decorrelation=1"
  [ar-sign-decorrelated]="$window --set loss.attribute_loss=sign --set loss.attribute_decorrelation=1"
  [ar-sign-decorrelated-seed1]="$window --set loss.attribute_loss=sign --set loss.attribute_decorrelation=1 --set train.seed=1"
  [ar-sign-decorrelated-seed2]="$window --set loss.attribute_loss=sign --set loss.attribute_decorrelation=1 --set train.seed=2"
  [ar-sign-independent]="$window --set loss.attribute_loss=sign --set loss.attribute_decorrelation=1 --set loss.attribute_independence=10"
  [ar-sign-adversary]="$window --set loss.attribute_loss=sign --set loss.attribute_decorrelation=1 --set model.adversary_hidden=64 --set loss.attribute_adversary=1"
  [ar-sign-adversary-seed1]="$window --set loss.attribute_loss=sign --set loss.attribute_decorrelation=1 --set model.adversary_hidden=64 --set loss.attribute_adversary=1 --set train.seed=1"
  [ar-sign-adversary-ramp]="$window $ramp"
  [ar-sign-adversary-ramp-seed1]="$window $ramp --set train.seed=1"
  [ar-sign-adversary-ramp-seed2]="$window $ramp --set train.seed=2"
  [ar-sign-decorrelated-rhythm]="$window $sign $rhythm"
  [ar-sign-decorrelated-rhythm-seed1]="$window $sign $rhythm --set train.seed=1"
  [ar-sign-decorrelated-rhythm-seed2]="$window $sign $rhythm --set train.seed=2"
  [ar-sign-adversary-ramp-rhythm]="$window $ramp $bounded $rhythm"
  [ar-sign-adversary-ramp-rhythm-seed1]="$window $ramp $bounded $rhythm --set train.seed=1"
  [ar-sign-adversary-ramp-rhythm-seed2]="$window $ramp $bounded $rhythm --set train.seed=2"
)
all=(encoder latent decoder none none-seed1 none-seed2 decoder-window-decorrelated
  ar-regression ar-regression-decorrelated ar-sign-decorrelated ar-sign-decorrelated-seed1
  ar-sign-decorrelated-seed2 ar-sign-independent ar-sign-adversary ar-sign-adversary-seed1
  ar-sign-adversary-ramp ar-sign-adversary-ramp-seed1 ar-sign-adversary-ramp-seed2
  ar-sign-decorrelated-rhythm ar-sign-decorrelated-rhythm-seed1 ar-sign-decorrelated-rhythm-seed2
  ar-sign-adversary-ramp-rhythm ar-sign-adversary-ramp-rhythm-seed1
  ar-sign-adversary-ramp-rhythm-seed2)
read -r -a order <<< "${MODELS:-${all[*]}}"
for name in "${order[@]}"; do
  if [ -z "${recipes[$name]+set}" ]; then
    echo "MODELS: unknown model $name (known: ${all[*]})" >&2
    exit 2
  fi
done

train_one() {
  local name="$1" pin=()
  if [ "$jobs" -gt 1 ] && command -v taskset >/dev/null; then pin=(taskset -c "$2"); fi
  if [ -d "$out/$name/checkpoints/$steps" ]; then
    echo "$out/$name: step $steps already trained"
    return
  fi
  local resume=()
  [ -d "$out/$name/checkpoints" ] && resume=(--resume)
  # shellcheck disable=SC2086  # the recipe is a list of --set arguments
  "${pin[@]}" musicvae train --config "$config" --data "$out/data" --workdir "$out/$name" \
    "${resume[@]}" --set name="folk$bars-$name" --set train.num_steps="$steps" \
    --set logging.progress_bar=false $base ${recipes[$name]} > "$out/$name.log" 2>&1
  echo "$out/$name: trained ($out/$name.log)"
}

running=0
for i in "${!order[@]}"; do
  train_one "${order[$i]}" "$((i % jobs))" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
done
wait

# The unconditioned model twice: with the paper's attribute vector, and (a copy) with
# the calibrated regression direction (its other seeds once, with the attribute vector:
# they are there for the reconstruction each seed of a method is compared with); every attribute-regularised model twice: with
# requests Gaussianised as in training, and (a copy) with its danceability map.
checkpoints=()
mapped=()
aimed=()
for name in "${order[@]}"; do
  checkpoints+=("$out/$name")
  if [[ "$name" == none-seed* ]]; then  # the other seeds of `none`: their reconstruction
    musicvae attribute-vector --checkpoint "$out/$name" --data "$out/data"
  fi
  if [ "$name" = none ]; then
    rm -rf "$out/none-regression"
    cp -r "$out/none" "$out/none-regression"
    musicvae attribute-vector --checkpoint "$out/none" --data "$out/data"
    musicvae attribute-vector --checkpoint "$out/none-regression" --data "$out/data" \
      --method regression --level window
    checkpoints+=("$out/none-regression")
  fi
  if [[ "$name" == ar-* ]]; then
    rm -rf "$out/$name-map"
    cp -r "$out/$name" "$out/$name-map"
    musicvae danceability-map --checkpoint "$out/$name-map" --data "$out/data"
    checkpoints+=("$out/$name-map")
    mapped+=("$out/$name-map")
    if [[ "$name" == *-rhythm* ]]; then aimed+=("$out/$name-map"); fi
  fi
done
# Once as decoded, once with one decode-encode round of every generated and edited
# melody (`--refine 1`, the default of `musicvae sample`); the mapped models also with
# emphasised requests.
analyze() {  # RESULTS REFINE EMPHASIS KEEP AIM CHECKPOINT...
  local results="$1" refine="$2" emphasis="$3" keep="$4" aim="$5"
  shift 5
  musicvae analyze --data "$out/data" --out "$results" --max-windows 512 \
    --samples-per-value 64 --edit-windows 64 --refine "$refine" --emphasis "$emphasis" \
    "--$keep" "--$aim" --checkpoints "$@"
  echo "table: $results/results.md (JSON: $results/results.json)"
}
emphasis="${EMPHASIS:-2}"
analyze "$out/results" 0 1 no-keep-source no-aim "${checkpoints[@]}"
analyze "$out/results_refined" 1 1 no-keep-source no-aim "${checkpoints[@]}"
if [ "${#mapped[@]}" -gt 0 ]; then
  analyze "$out/results_emphasis" 1 "$emphasis" no-keep-source no-aim "${mapped[@]}"
  analyze "$out/results_controlled" 1 "$emphasis" keep-source no-aim "${mapped[@]}"
  analyze "$out/results_controlled_once" 0 "$emphasis" keep-source no-aim "${mapped[@]}"
fi
if [ "${#aimed[@]}" -gt 0 ]; then
  analyze "$out/results_aimed" 1 "$emphasis" keep-source aim "${aimed[@]}"
fi
