#!/usr/bin/env bash
# State (PyPI arc-state 0.11.1, Arc Institute) in $PEER_ENVS/state.
PEER=state
source "$(dirname "$0")/_venv.sh"
"${PIP[@]}" torch==2.13.0 arc-state==0.11.1
"$VENV/bin/python" -c "import state, torch; print('state ok, torch', torch.__version__)"
