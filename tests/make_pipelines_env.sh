#!/usr/bin/env bash
# The pipelines test environment: kfp (katibx[pipelines]) with the kubernetes client it allows, beside the default
# one (the Katib SDK, the newest kubernetes client), which cannot hold kfp. tests/test_pipelines_env.py runs
# tests/pipelines and the Kubernetes backend's tests in it. Made again only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-pipelines
stamp="$venv/.pyproject.sha256"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e '.[test-pipelines]'
echo "$want" > "$stamp"
