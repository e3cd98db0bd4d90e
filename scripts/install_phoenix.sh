#!/usr/bin/env bash
# Install Arize Phoenix, the real OTLP receiver of the tracing tests, into a venv of its own,
# once; print the path of its `phoenix` executable.
#
# Usage: scripts/install_phoenix.sh [PYTHON]   (PYTHON: the project's interpreter, default python3)
#
# Phoenix is a large application (about 850 MB installed on its own). Its venv is layered over
# the project's: a .pth file puts the project's site-packages after its own, so pip installs
# only what the project lacks or needs at another version (about 370 MB, a third of the
# download), and never touches the project's venv (pip does not uninstall outside its own).
# The venv is cached under CASCADE_PHOENIX_DIR (default ~/.cache/cascade-router/phoenix), keyed
# by the Phoenix version and the project's installed distributions: when those change, it is
# rebuilt (and the older one removed). A lock keeps two test sessions from installing at once.
set -euo pipefail
python="${1:-python3}"
version="20.26.1"
root="${CASCADE_PHOENIX_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cascade-router/phoenix}"
mkdir -p "$root"

base_python=$("$python" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')
base_site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
key=$(
  {
    echo "arize-phoenix==$version $base_python $base_site"
    "$python" -c 'import importlib.metadata as m
print(sorted((d.metadata["Name"], d.version) for d in m.distributions()))'
  } | sha256sum | cut -c1-16
)
venv="$root/$key"

exec 9>"$root/.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
  echo "installing arize-phoenix==$version into $venv (once; a few minutes)" >&2
  rm -rf "$venv"
  "$base_python" -m venv "$venv"
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # after the venv's own packages: what Phoenix needs at another version wins
  echo "import site; site.addsitedir('$base_site')" > "$site/zz_project_packages.pth"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "arize-phoenix==$version" >&2
  touch "$venv/.complete"
  find "$root" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
fi
echo "$venv/bin/phoenix"
