#!/usr/bin/env bash
# Installs Debian's Chromium (once) for the test that renders the HTML report headless. Needs root
# and apt; where either is missing it says so and the test skips, naming the reason.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "cannot install chromium here (needs root and apt-get)" >&2
  exit 1
fi
apt-get install -y -q chromium >&2 || { apt-get update -q >&2 && apt-get install -y -q chromium >&2; }
