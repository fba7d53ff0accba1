#!/usr/bin/env bash
# cell-eval (PyPI cell-eval 0.8.2, Arc Institute) in $PEER_ENVS/celleval: the second judge.
PEER=celleval
source "$(dirname "$0")/_venv.sh"
"${PIP[@]}" cell-eval==0.8.2
"$VENV/bin/python" -c "import cell_eval; print('cell-eval ok')"
