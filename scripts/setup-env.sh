#!/usr/bin/env bash
# Create the virtual environment and install dpmot-bench into it.
#   usage: scripts/setup-env.sh [PYTHON] [VENV]
# torch: an existing torch is kept (a GPU user brings their own, either installed in VENV beforehand or
# in the interpreter PYTHON, whose packages the venv then sees); otherwise the CPU build torch==2.13.0.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}

if [ ! -x "$venv/bin/python" ]; then
  if "$python" -c "import torch" >/dev/null 2>&1; then
    echo "setup: $python already has torch; the venv will use it (--system-site-packages)"
    "$python" -m venv --system-site-packages "$venv"
  else
    "$python" -m venv "$venv"
  fi
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
if "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "setup: keeping torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
else
  echo "setup: no torch found; installing the CPU build torch==2.13.0"
  "${pip[@]}" install -q torch==2.13.0
fi
"${pip[@]}" install -q -e ".[test,text]"
