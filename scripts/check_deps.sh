#!/usr/bin/env bash
# `make lint`: every third-party module the product imports is a declared requirement (deptry).
#   - the server and the embedded engine import only what requirements.txt declares, and no test
#     tool from requirements-dev.txt;
#   - the Chatterbox engine modules may add what requirements-chatterbox.txt declares.
# Usage: scripts/check_deps.sh [VENV_BIN] (deptry maps modules to packages through that environment)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-.venv/bin}
ENGINE='workers/engines/(chatterbox|s3gen_stream|t3_batch|s3gen_batch|stack_check)\.py'
common=(--known-first-party chatterbox_server --known-first-party workers
        --requirements-files-dev requirements-dev.txt)
# Declared for what is not an import: gunicorn runs the app, psycopg is SQLAlchemy's driver for
# postgresql:// URLs, swagger-ui-py is found by file (api_docs.swagger_static_dir), and the build tools.
"$BIN/deptry" chatterbox_server workers "${common[@]}" \
    --requirements-files requirements.txt --extend-exclude "$ENGINE" \
    --per-rule-ignores "DEP002=gunicorn|psycopg|swagger-ui-py|pip|setuptools|wheel"
# The engine's modules: an unused declaration is no finding here (the first run judges those).
"$BIN/deptry" workers/engines "${common[@]}" \
    --requirements-files requirements.txt,requirements-chatterbox.txt,requirements-chatterbox-tts.txt \
    --ignore DEP002
