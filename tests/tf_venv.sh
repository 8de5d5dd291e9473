#!/usr/bin/env bash
# Builds (once) the small venv in which the tests that need TensorFlow run: tensorflow-cpu 2.21 (its
# pins conflict with VESL's: protobuf 7, pyarrow 26) and what VESL's readers import. Prints its
# python. Used by `make test` (tests then find it at .cache/venvs/tensorflow) and by
# tests/fixtures/tensorflow/regenerate.sh. Set VESL_TF_VENV to put it elsewhere.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${VESL_TF_VENV:-$root/.cache/venvs/tensorflow}"
PY="${PY:-python3}"
packages=(tensorflow-cpu==2.21.0 pyarrow numpy google-crc32c)
if [ ! -x "$dir/bin/python" ] || ! "$dir/bin/python" -m pip freeze 2>/dev/null | grep -qi "^tensorflow[-_]cpu==2.21.0$"; then
  rm -rf "$dir"
  "$PY" -m venv "$dir" >&2
  "$dir/bin/python" -m pip install -q "${packages[@]}" >&2
fi
"$dir/bin/python" -c "import tensorflow" >&2
echo "$dir/bin/python"
