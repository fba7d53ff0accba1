#!/usr/bin/env bash
# Build the HTML documentation; warnings are errors. The one docs build command, used by CI and Read the Docs.
#
# Usage: bash scripts/build_docs.sh [OUTPUT_DIR]   (default: docs/_build/html under the repository root;
#        a relative OUTPUT_DIR is taken relative to the current directory)
# Uses whatever `python` is on PATH (activate the environment first). Offline by default; set
# BIOJEPA_DOCS_INTERSPHINX=1 to enable intersphinx links (needs internet).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ $# -ge 1 ]]; then
    mkdir -p "$1"
    out_dir="$(cd "$1" && pwd)"
else
    out_dir="$repo_root/docs/_build/html"
fi

cd "$repo_root"
# autosummary pages are regenerated on every build; drop stale ones (of renamed or removed names).
rm -rf docs/generated
python -m sphinx -W --keep-going -b html docs "$out_dir"
