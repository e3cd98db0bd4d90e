#!/usr/bin/env bash
# Build llama-cpp-python portable and install it into .venv (part of scripts/bootstrap.sh).
#
# llama-cpp-python ships no wheel for this platform: pip compiles it, by default tuned to the
# CPU of the machine that builds it (GGML_NATIVE=ON). On this project's machines (AVX-512 and
# AMX) that build segfaults on the first chat completion, so the wheel is built portable
# (GGML_NATIVE=OFF: AVX2/FMA/F16C code paths that run on any CPU of this kind). pip's own cache
# is keyed by version only and would hand back a wheel built with other flags, so the wheel is
# built with --no-cache-dir into a wheelhouse keyed by version and flags, and installed from
# there. A build takes 15-25 min on 2 cores, once per machine.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/.*"llama-cpp-python\[server\]==\([0-9.]*\)".*/\1/p' pyproject.toml)
[ -n "$version" ] || { echo "pyproject.toml pins no llama-cpp-python version" >&2; exit 1; }
cmake_args="-DGGML_NATIVE=OFF"
key=$(printf '%s %s' "$version" "$cmake_args" | sha256sum | cut -c1-12)
wheelhouse="${CASCADE_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/cascade-router/wheels}/llama-cpp-python-$version-$key"
wheel=$(ls "$wheelhouse"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
  echo "building llama-cpp-python $version portable ($cmake_args): 15-25 min on 2 cores, once"
  mkdir -p "$wheelhouse"
  CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    .venv/bin/python -m pip wheel --quiet --no-deps --no-cache-dir --no-binary llama-cpp-python \
    "llama-cpp-python==$version" -w "$wheelhouse"
  wheel=$(ls "$wheelhouse"/llama_cpp_python-"$version"-*.whl | head -n 1)
fi
# reinstall whenever the installed build is not this wheel (e.g. an earlier native build)
marker=.venv/.llama-cpp-wheel
digest=$(sha256sum "$wheel" | cut -c1-64)
if [ "$(cat "$marker" 2>/dev/null)" != "$digest" ]; then
  .venv/bin/python -m pip install --quiet --force-reinstall --no-deps "$wheel"
  echo "$digest" > "$marker"
fi
