#!/usr/bin/env bash
# Create .venv and install wasmudf with its pinned test and build dependencies (PySpark among
# them, with Debian's Java 17), the Rust guest toolchain from Debian's packages (rustc 1.63
# with the wasm32 standard library), SQLite's extension header (the C accelerator registers
# SQLite functions directly) and the AssemblyScript compiler from npm.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "set-up: $*" >&2; }

DEBIAN_PACKAGES=(rustc=1.63.0+dfsg1-2 libstd-rust-dev-wasm32=1.63.0+dfsg1-2 lld=1:14.0-55.7~deb12u1
                 libsqlite3-dev=3.40.1-2+deb12u2)
if ! dpkg -s libstd-rust-dev-wasm32 libsqlite3-dev >/dev/null 2>&1 || [ ! -x /usr/bin/rustc ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    step "installing Debian packages (rustc, wasm32 std, lld, sqlite3 headers)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${DEBIAN_PACKAGES[@]}" >/dev/null
fi

# A Java 17 runtime for PySpark (the `spark` extra): Debian's, pinned, unless one is there.
JAVA_PACKAGE=openjdk-17-jre-headless=17.0.19+10-1~deb12u2
if ! java -version 2>&1 | grep -q 'version "17'; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    step "installing Java 17 for Spark ($JAVA_PACKAGE)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$JAVA_PACKAGE" >/dev/null
fi

# Everything below is skipped when what it installs is there and its inputs have not changed
# since (a stamp holds their hash): a second run of the demo starts at once.
inputs_hash() {
    cat package-lock.json pyproject.toml setup.py scripts/setup.sh wasmudf/*.c wasmudf/*.h wasmudf/adapters/*.c \
        | sha256sum | cut -d' ' -f1
}
stamp=".venv/.set-up-$(inputs_hash)"
if [ -f "$stamp" ] && [ -x node_modules/.bin/asc ] && .venv/bin/python -c "import wasmudf" 2>/dev/null; then
    exit 0
fi

# The AssemblyScript compiler, pinned in package-lock.json.
step "installing the AssemblyScript compiler (npm ci)"
npm ci --silent --no-audit --no-fund

step "installing wasmudf and its pinned dependencies into .venv (first time: about a minute)"
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade "pip>=24,<27"
.venv/bin/python -m pip install --quiet -e ".[test]"
rm -f .venv/.set-up-*
touch "$stamp"
step "done"
