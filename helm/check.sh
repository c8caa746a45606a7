#!/usr/bin/env bash
# Renders, lints and checks helm/lextral with Helm's own SDK (PyPI
# helm-python-sdk, Helm v4.2.3, offline) and the Kubernetes schemas (PyPI
# kubernetes-validate), installed pinned from helm/requirements.txt into a
# venv in the cache on first use. See helm/check.py for what is checked.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${LEXTRAL_HOME:-$HOME/.cache/lextral}/tools/helm-venv"
stamp="$venv/.requirements"
if ! cmp -s helm/requirements.txt "$stamp" 2>/dev/null; then
  echo "helm-check: installing helm-python-sdk and kubernetes-validate into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r helm/requirements.txt
  cp helm/requirements.txt "$stamp"
fi
exec "$venv/bin/python" helm/check.py helm/lextral
