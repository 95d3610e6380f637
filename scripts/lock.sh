#!/usr/bin/env bash
# `make lock`: resolves locks/*.txt from the requirements files. Every install (make install,
# install-dev, install-chatterbox, .ci/run) reads only the locks: exact versions with hashes, one
# universal resolution for Python 3.10-3.12 on any platform. LOCK_FLAGS="" keeps today's pins and
# only resolves what changed in the requirements files; the default moves every pin to the newest
# release the ranges allow.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
read -r -a flags <<<"${LOCK_FLAGS---upgrade}"
compile=("$UV" pip compile --quiet --universal --python-version 3.10 --generate-hashes
         --custom-compile-command "make lock" "${flags[@]}")
# One resolution of all three sets first, so that the per-target locks agree wherever they overlap:
# make test installs runtime, dev and chatterbox into one virtualenv.
"${compile[@]}" requirements.txt requirements-dev.txt requirements-chatterbox.txt -o locks/all.txt
"${compile[@]}" -c locks/all.txt requirements.txt -o locks/runtime.txt
"${compile[@]}" -c locks/all.txt requirements.txt requirements-dev.txt -o locks/dev.txt
"${compile[@]}" -c locks/all.txt requirements.txt requirements-chatterbox.txt -o locks/chatterbox.txt
"${compile[@]}" --no-deps requirements-chatterbox-tts.txt -o locks/chatterbox-tts.txt
