#!/usr/bin/env bash
# Create .venv and install wasmudf with its pinned test and build dependencies, the Rust guest
# toolchain from Debian's packages (rustc 1.63 with the wasm32 standard library), SQLite's
# extension header (the C accelerator registers SQLite functions directly) and the
# AssemblyScript compiler from npm.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(rustc=1.63.0+dfsg1-2 libstd-rust-dev-wasm32=1.63.0+dfsg1-2 lld=1:14.0-55.7~deb12u1
                 libsqlite3-dev=3.40.1-2+deb12u2)
if ! dpkg -s libstd-rust-dev-wasm32 libsqlite3-dev >/dev/null 2>&1 || [ ! -x /usr/bin/rustc ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${DEBIAN_PACKAGES[@]}" >/dev/null
fi

# The AssemblyScript compiler, pinned in package-lock.json.
npm ci --silent --no-audit --no-fund

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade "pip>=24,<27"
.venv/bin/python -m pip install --quiet -e ".[test]"
