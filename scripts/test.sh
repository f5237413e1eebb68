#!/usr/bin/env bash
# Install pcsr with its test dependencies into the active environment and run the tests.
# (Expects torch to be installed already: the package builds its C++ extension against it.)
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q setuptools wheel ninja numpy pillow safetensors tqdm pypng tifffile psutil triton \
    pytest pytest-benchmark hypothesis expecttest matplotlib scikit-image av
# tests/test_libtorch_example.py builds the C++ example with CMake: the pip package where none is installed
command -v cmake >/dev/null || python -m pip install -q cmake
MAX_JOBS=${MAX_JOBS:-2} python -m pip install -q --no-build-isolation -e .
python -m pytest -q tests
