#!/usr/bin/env bash
# Set up vdir on a fresh Debian machine: system packages, a virtualenv with vdir and its
# extras, and a `vdir` command that wins over coreutils' /usr/bin/vdir.
#   scripts/setup.sh          the product (all backends, FUSE)
#   scripts/setup.sh --test   also what the test suite needs (test servers, linters)
#   scripts/setup.sh --bench  also the peers the benchmarks compare against (rclone, s3fs, fio, pyfuse3)
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WANT_TEST=0; WANT_BENCH=0
for a in "$@"; do
  case "$a" in --test) WANT_TEST=1 ;; --bench) WANT_TEST=1; WANT_BENCH=1 ;; *) echo "setup: unknown option $a" >&2; exit 2 ;; esac
done

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

# --- system packages ------------------------------------------------------------------------
apt_pkgs=(fuse3 libfuse2 python3-venv)
[ $WANT_TEST = 1 ] && apt_pkgs+=(rsync git sqlite3 nodejs npm)
# the web interface's browser tests (tests/test_web.py): Chromium and its WebDriver, driven by Selenium
[ $WANT_TEST = 1 ] && apt_pkgs+=(chromium chromium-driver)
# a real one-node SLURM cluster for the compute tests (tests/servers/slurm.py starts it in a
# network namespace of its own, with its own config, munge key and sockets, so daemons the
# packages may start are left alone: iproute2 for `ip`, util-linux for unshare/nsenter)
[ $WANT_TEST = 1 ] && apt_pkgs+=(slurmctld slurmd slurm-client munge iproute2 util-linux)
[ $WANT_BENCH = 1 ] && apt_pkgs+=(rclone s3fs fio libfuse3-dev pkg-config gcc python3-dev)  # the last four build pyfuse3
missing=()
for p in "${apt_pkgs[@]}"; do
  # node may come from elsewhere (nodesource, nvm): only ask apt when the command is absent
  case "$p" in nodejs) command -v node >/dev/null && continue ;; npm) command -v npm >/dev/null && continue ;; esac
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- python -----------------------------------------------------------------------------------
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  $PY -m venv .venv
fi
extras="all"; [ $WANT_TEST = 1 ] && extras="all,test"; [ $WANT_BENCH = 1 ] && extras="all,test,bench"
# every version comes from constraints.txt (what the suite passed with): a fresh machine gets
# the same packages, and an upgrade is a deliberate change (scripts/lock.sh)
stamp=".venv/.installed-$extras-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  say "installing vdir[$extras] into .venv (versions pinned by constraints.txt)"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -c constraints.txt -e ".[$extras]"
  rm -f .venv/.installed-*; touch "$stamp"
fi

# --- test servers from npm (Azurite) ----------------------------------------------------------
if [ $WANT_TEST = 1 ] && [ ! -x .cache/azurite/node_modules/.bin/azurite-blob ]; then
  say "installing Azurite 3.35.0 (Azure Blob emulator) into .cache/azurite"
  mkdir -p .cache/azurite
  (cd .cache/azurite && npm install --silent --no-audit --no-fund azurite@3.35.0 >/dev/null)
fi

# --- make our `vdir` the one found (coreutils ships /usr/bin/vdir, a variant of ls) ----------
target="$ROOT/.venv/bin/vdir"
if [ -w /usr/local/bin ] || [ "$(id -u)" = 0 ]; then
  ln -sf "$target" /usr/local/bin/vdir
  bindir=/usr/local/bin
else
  mkdir -p "$HOME/.local/bin"; ln -sf "$target" "$HOME/.local/bin/vdir"
  bindir=$HOME/.local/bin
fi
hash -r 2>/dev/null || true
found=$(command -v vdir || true)
if [ "$(readlink -f "$found" 2>/dev/null)" != "$(readlink -f "$target")" ]; then
  say "WARNING: 'vdir' on your PATH is $found, not ours."
  say "         put $bindir before /usr/bin in PATH, or run $target"
fi
version=$("$target" --version)  # fails loudly if the install is broken
say "ready: ${version%%$'\n'*}"
