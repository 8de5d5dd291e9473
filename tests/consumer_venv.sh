#!/usr/bin/env bash
# Builds (once) a small venv for one real consumer of VESL's output whose pins conflict with VESL's,
# and prints its python. Used by `make test` (tests find them under .cache/venvs/NAME) and by the
# fixture scripts.
#   tests/consumer_venv.sh tensorflow     tensorflow-cpu 2.21 (+ what VESL's readers import)
#   tests/consumer_venv.sh hf-datasets    Hugging Face datasets 5.2
#   tests/consumer_venv.sh readers        VESL itself, reader-only: --no-deps + requirements/readers.txt
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
name="${1:?usage: tests/consumer_venv.sh tensorflow|hf-datasets|readers}"
dir="${VESL_CONSUMER_VENVS:-$root/.cache/venvs}/$name"
PY="${PY:-python3}"
case "$name" in
  tensorflow) packages=(tensorflow-cpu==2.21.0 pyarrow numpy google-crc32c); probe="tensorflow"; pin="tensorflow[-_]cpu==2.21.0" ;;
  hf-datasets) packages=(datasets==5.2.0 pillow==13.0.0); probe="datasets"; pin="datasets==5.2.0" ;;
  readers) packages=(-r "$root/requirements/readers.txt"); probe="pyarrow"; pin="pyarrow==.*" ;;
  *) echo "unknown consumer venv: $name" >&2; exit 2 ;;
esac
if [ ! -x "$dir/bin/python" ] || ! "$dir/bin/python" -m pip freeze 2>/dev/null | grep -qi "^${pin}$"; then
  rm -rf "$dir"
  "$PY" -m venv "$dir" >&2
  "$dir/bin/python" -m pip install -q "${packages[@]}" >&2
fi
if [ "$name" = readers ]; then  # VESL itself, installed as a training host would, every time (it changes)
  "$dir/bin/python" -m pip install -q --no-deps --force-reinstall "$root" >&2
fi
"$dir/bin/python" -c "import $probe" >&2
echo "$dir/bin/python"
