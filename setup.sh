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

.venv/bin/chatbot ingest data/kb
.venv/bin/chatbot ask "What's the heaviest load a single H2 robot can carry?"
