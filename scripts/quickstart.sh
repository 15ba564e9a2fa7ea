#!/usr/bin/env bash
# quickstart.sh -- install guard into ./.venv and run `guard demo` on the bundled sample messages.
# For a fresh Debian 12 machine; as root it installs python3-venv if that is missing.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
  if [[ $EUID -eq 0 ]]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv
  else
    echo "quickstart: python3-venv is missing; install it (apt-get install python3-venv) and re-run" >&2
    exit 1
  fi
fi
[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q .
echo "== guard demo: the whole pipeline once over the bundled sample messages (no server needed) =="
"$VENV/bin/guard" demo
echo
echo "guard is installed in $VENV/bin: run '. $VENV/bin/activate' to type the commands above as shown"
