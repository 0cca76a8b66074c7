#!/usr/bin/env bash
# Step 2 of training on a GPU machine (docs/training.md), from a copy of this
# repository there: Python 3 with JAX (or PyTorch) but no TensorFlow, no Django, no internet.
#
#   bash ml/gpu_train.sh stage PATH...             keep what this trip carried, train nothing
#   bash ml/gpu_train.sh train [PATH...] [-- ARGS]  keep it too, then train on everything kept
#
# PATH is what travelled with this copy: bundle folders from `manage.py prepare_accelerated`
# (or single parts of one, and its manifest.json), the Lite0 checkpoint (*.pth), and wheel
# files or folders of them (*.whl: Keras and what it needs, where the machine has no Keras 3).
# Everything is kept under $GPU_STAGE (default /tmp/skincare-gpu), so a bundle too large for
# one trip can come in several, each with a `stage` call, the last with `train`. ARGS go to
# `python -m ml.training.remote` (--finetune-epochs, --padding, --workers, ...); the run is written
# to $GPU_OUTPUT (default $OUT/run where $OUT is set, else runs/gpu), its log beside it.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
[[ $mode == stage || $mode == train ]] || { sed -n '2,14p' "$0" >&2; exit 2; }
shift
stage=${GPU_STAGE:-/tmp/skincare-gpu}
mkdir -p "$stage/bundle" "$stage/wheels"

paths=()
while (($#)) && [[ $1 != -- ]]; do paths+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift

for path in "${paths[@]}"; do
    if [[ -d $path ]] && compgen -G "$path/*.whl" >/dev/null; then
        cp "$path"/*.whl "$stage/wheels/"
    elif [[ $path == *.whl ]]; then
        cp "$path" "$stage/wheels/"
    elif [[ $path == *.pth ]]; then
        cp "$path" "$stage/lite0.pth"
    elif [[ -f $path && $(basename "$path") == manifest.json ]]; then
        cp "$path" "$stage/bundle/"
    elif [[ -d $path ]]; then
        # a bundle folder (manifest.json and part folders) or one part of it: merged as they are
        cp -r "$path"/. "$stage/bundle/"
    else
        echo "gpu_train: $path is neither a bundle folder, a .pth checkpoint nor wheels" >&2
        exit 2
    fi
    echo "gpu_train: kept $path"
done

if compgen -G "$stage/wheels/*.whl" >/dev/null && [[ ! -e $stage/site/.installed ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$stage/site" "$stage"/wheels/*.whl
    touch "$stage/site/.installed"
fi
echo "gpu_train: kept so far: $(du -sh "$stage" | cut -f1) in $stage"
[[ $mode == stage ]] && exit 0

export PYTHONPATH="$stage/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=${KERAS_BACKEND:-jax} JAX_COMPILATION_CACHE_DIR="$stage/jaxcache" PYTHONUNBUFFERED=1
[[ -f $stage/lite0.pth ]] || { echo "gpu_train: no Lite0 checkpoint (*.pth) has travelled" >&2; exit 2; }
output=${GPU_OUTPUT:-${OUT:+$OUT/run}}
output=${output:-runs/gpu}
mkdir -p "$output"
echo "gpu_train: Keras backend $KERAS_BACKEND; run in $output"
python3 -m ml.training.remote --bundle "$stage/bundle" --weights "$stage/lite0.pth" --output "$output" "$@" \
    2>&1 | tee "$output/train.log"
