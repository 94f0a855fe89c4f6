#!/usr/bin/env bash
# Installs the Debian packages annealbench's tests and `make run` need:
#   dataset-fashion-mnist  the real Fashion-MNIST (IDX files in /usr/share/datasets/fashion-mnist)
#   chromium               headless browser that checks report.html renders
# Only what is missing is installed; on a machine without apt-get it says what to install.
set -euo pipefail
need=()
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "annealbench: please install ${need[*]} (Debian/Ubuntu packages) or their equivalents." >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "annealbench: run as root: apt-get install -y ${need[*]}" >&2; exit 1; fi
fi
echo "annealbench: installing Debian packages: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
