#!/usr/bin/env bash
# Create .venv with every pinned dependency, in the order that keeps the CPU
# build of torch and installs dictionary-learning next to a current nnsight.
# Idempotent: does nothing when the stamp matches the requirement files.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv
STAMP=$VENV/.bootstrap-stamp
want=$(cat requirements.txt constraints.txt scripts/bootstrap.sh pyproject.toml | sha256sum | cut -c1-16)

# Headless Chromium for the HTML report tests: Debian's package, driven by the playwright
# Python package through executable_path (never `playwright install`, which downloads).
if [[ ! -x /usr/bin/chromium ]]; then
  if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
    echo "[bootstrap] installing chromium (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
      >/dev/null || echo "[bootstrap] warning: apt-get could not install chromium" >&2
  else
    echo "[bootstrap] warning: /usr/bin/chromium is missing (install Debian's chromium" \
      "package as root); the report tests will fail without it" >&2
  fi
fi

if [[ -f $STAMP && $(cat "$STAMP") == "$want" ]]; then
  exit 0
fi

echo "[bootstrap] creating $VENV with $($PYTHON --version)"
[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
# 1. torch first: the pinned CPU build (asking for a range pulls a multi-GB CUDA build).
"${PIP[@]}" "torch==2.13.0"
# 2. everything else, with every transitive version pinned.
"${PIP[@]}" -r requirements.txt -c constraints.txt
# 3. dictionary-learning 0.1.0 pins nnsight<0.4, which does not work here; we use
#    only its trainer and dictionary classes, so install it without its pins.
"${PIP[@]}" --no-deps "dictionary-learning==0.1.0"
# 4. this project (entry points for corpus plugins).
"${PIP[@]}" --no-deps -e .
echo "$want" > "$STAMP"
echo "[bootstrap] done"
