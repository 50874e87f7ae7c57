#!/usr/bin/env bash
# Setup and the unit tests on each supported Python, each in its own copy of this checkout under
# var/pythons/ (so the clone's own .venv stays as it is). The environments land in the usual cache,
# one per Python and set of pins, so a second run only tests.
#   PYTHONS="python3.11 /opt/py312/bin/python3.12 ..." picks the interpreters (default: those of
#   python3.11, python3.12, python3.13 that run).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
pythons=${PYTHONS:-}
if [ -z "$pythons" ]; then
  for candidate in python3.11 python3.12 python3.13; do
    "$candidate" -c "" >/dev/null 2>&1 && pythons="$pythons $candidate"
  done
fi
[ -n "$pythons" ] || { echo "test-pythons: no Python 3.11-3.13 found (set PYTHONS=...)" >&2; exit 1; }

summary=()
failed=0
for python in $pythons; do
  version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || {
    summary+=("$python: does not run"); failed=1; continue; }
  copy="$root/var/pythons/$version"
  rm -rf "$copy" && mkdir -p "$copy"
  # the checkout as it is now, committed or not, without ignored files
  git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$copy"
  echo "== Python $version ($python)"
  if ! (cd "$copy" && PYTHON="$python" bash scripts/setup.sh); then
    summary+=("Python $version: setup failed"); failed=1; continue
  fi
  result=$(cd "$copy" && HF_HUB_OFFLINE=1 PYTHONPATH="$copy" .venv/bin/python -m pytest -m unit -q \
    -p no:cacheprovider 2>&1 | tail -1)  # pipefail: the status is pytest's
  status=$?
  summary+=("Python $version: setup ok, unit tests: $result")
  [ "$status" = 0 ] || failed=1
done
printf '%s\n' "${summary[@]}"
exit "$failed"
