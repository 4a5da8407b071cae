# Shared set-up for scripts/demo and scripts/test: system packages, the virtualenv at .venv, the project.
# Sourced, not run. Works on a fresh Debian/Ubuntu machine; installs with apt-get only when root.

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$REPO_ROOT/.venv"
APT_UPDATED=0

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

apt_install() {
    # apt_install PACKAGE...: install Debian packages, or explain what to install when we cannot.
    if [ "$(id -u)" -ne 0 ]; then
        die "missing system package(s): $*. Install them with: sudo apt-get install $*"
    fi
    command -v apt-get >/dev/null || die "missing system package(s): $* (and no apt-get here to install them)"
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

find_python() {
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

ensure_system() {
    local python
    python="$(find_python)" || die "Python 3.11 or newer is needed (Debian 12 / Ubuntu 24.04 ship it as python3)"
    if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
        apt_install python3-venv
    fi
    if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
        apt_install mosquitto
    fi
    # The browser tests drive the system Chromium through Playwright (DESIGN.md section 4): Playwright's
    # own browser download is never used, so the Debian package is the one browser we test against.
    if [ ! -x /usr/bin/chromium ]; then
        apt_install chromium
    fi
    # Fonts for e-ink tags: a CJK font for product names, DejaVu for digits and Latin text.
    if [ ! -f /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ] || [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
        apt_install fonts-wqy-zenhei fonts-dejavu-core
    fi
    PYTHON="$python"
}

ensure_test_system() {
    # The clock-fault tests run the agent under a shifted clock with Debian's libfaketime (an LD_PRELOAD
    # library): only the tests need it, so only scripts/test installs it.
    if ! ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1; then
        apt_install libfaketime
    fi
}

lock_stamp() {
    # lock_stamp LOCKFILE: a short digest of what decides the installed set (the lock and the Python).
    { cat "$1"; "$VENV/bin/python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16
}

ensure_venv() {
    # The virtualenv holds exactly the locked set (requirements/dev.lock: exact versions with hashes, for every
    # machine alike) plus the project itself, editable. When the lock changes the virtualenv is made anew, so a
    # package dropped from the lock does not linger and nothing resolves a version of its own.
    local lock="$REPO_ROOT/requirements/dev.lock"
    [ -f "$lock" ] || die "missing $lock (scripts/lock makes it from pyproject.toml)"
    if [ -x "$VENV/bin/python" ] && [ ! -f "$VENV/.installed-$(lock_stamp "$lock")" ]; then
        if compgen -G "$VENV/.installed-*" >/dev/null; then
            say "the lock file changed: making .venv anew"
        else
            say ".venv was not installed from the lock file: making it anew"
        fi
        rm -rf -- "$VENV"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating the virtualenv at .venv"
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.installed-$(lock_stamp "$lock")"
    if [ ! -f "$stamp" ]; then
        say "installing the locked dependencies (requirements/dev.lock) into .venv"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes -r "$lock"
        touch "$stamp"
    fi
    # The project itself, editable, again whenever pyproject.toml changes: an editable install knows the top-level
    # packages that existed when it was made, so a new one (mqtt_io, say) would be missing from `edge-agent`.
    # No dependency resolution and no build environment of its own (setuptools comes from the lock too), so
    # nothing outside the lock is installed.
    local project="$VENV/.project-$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -c1-16)"
    if [ ! -f "$project" ]; then
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
            -e "$REPO_ROOT"
        rm -f -- "$VENV"/.project-*
        touch "$project"
    fi
}

# mosquitto lives in /usr/sbin on Debian, which is not on every user's PATH.
export PATH="$PATH:/usr/sbin"
