#!/usr/bin/env bash
# Creates or refreshes what the demo and the tests need: the virtual environment in
# .venv with branchline installed (compiled DSP kernels included), pjsua2 built from
# source (scripts/pjsua2/build.sh; the wheel is cached outside the repo) and, when run
# as root, the Debian packages the tests use as real peers and test tools. Safe to run
# again: each step is skipped when it is already done. Sourced by scripts/demo and
# scripts/test.
set -euo pipefail

BL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BL_VENV="$BL_ROOT/.venv"

bl_log() { printf '[setup] %s\n' "$*" >&2; }

bl_apt() {
    # $@: Debian packages. Installs the missing ones when we are root; otherwise says
    # which are missing so the user can install them.
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        bl_log "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
        return 0
    fi
    bl_log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

bl_python() {
    local py
    for py in python3.13 python3.12 python3.11 python3; do
        if command -v "$py" >/dev/null && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "$py"; return 0
        fi
    done
    bl_log "Python 3.11 or newer is needed (apt-get install python3 python3-venv)"; return 1
}

bl_venv() {
    # $1: extras to install (e.g. "test"). Re-installs when pyproject/setup or a kernel changed.
    local extras="$1" stamp="$BL_VENV/.branchline-stamp" want
    if [ ! -x "$BL_VENV/bin/python" ]; then
        bl_log "creating virtual environment .venv"
        "$(bl_python)" -m venv "$BL_VENV"
        "$BL_VENV/bin/python" -m pip install -q -U pip
    fi
    if ! "$BL_VENV/bin/python" -c 'import Cython, setuptools, wheel' 2>/dev/null; then
        "$BL_VENV/bin/python" -m pip install -q -U "setuptools>=68" wheel "Cython>=3.0"
    fi
    want="$extras $(cd "$BL_ROOT" && find pyproject.toml setup.py cext -name '*.toml' -o -name 'setup.py' -o -name '*.pyx' -o -name '*.pxd' | sort | xargs cat | sha256sum | cut -c1-16)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        bl_log "installing branchline into .venv (compiles the DSP kernels)"
        (cd "$BL_ROOT" && "$BL_VENV/bin/python" -m pip install -q --no-build-isolation \
            -e ".[${extras}]" --config-settings editable_mode=compat)
        # The editable install builds the kernels in build/; put them beside their sources.
        (cd "$BL_ROOT" && "$BL_VENV/bin/python" setup.py -q build_ext --inplace >/dev/null)
        echo "$want" > "$stamp"
    fi
    bl_pjsua2
}

# Shared libraries the static pjsua2 wheel links against (Debian bookworm names; on
# newer releases the 64-bit-time_t "t64" variants count as present).
BL_PJSUA2_RUNTIME=(libsrtp2-1 libgsm1 libspeex1 libspeexdsp1 libasound2 libssl3 libuuid1)

bl_pjsua2() {
    # pjsua2 into .venv: the runtime libraries, then the cached wheel, which
    # scripts/pjsua2/build.sh builds first when missing (~2.5 min, needs root once).
    local p wanted=() wheel
    for p in "${BL_PJSUA2_RUNTIME[@]}"; do
        dpkg-query -W -f='${Status}' "${p}t64" 2>/dev/null | grep -q "install ok installed" \
            || wanted+=("$p")
    done
    bl_apt "${wanted[@]}"
    "$BL_VENV/bin/python" -c 'import pjsua2' 2>/dev/null && return 0
    if ! wheel="$("$BL_ROOT/scripts/pjsua2/build.sh" "$BL_VENV/bin/python")"; then
        bl_log "pjsua2 is not built yet; as root run once:" \
            "sudo BRANCHLINE_CACHE=\"${BRANCHLINE_CACHE:-$HOME/.cache/branchline}\"" \
            "$BL_ROOT/scripts/pjsua2/build.sh $BL_VENV/bin/python   (then run this again)"
        return 0
    fi
    bl_log "installing pjsua2 into .venv from $wheel"
    "$BL_VENV/bin/python" -m pip install -q --no-deps --force-reinstall "$wheel"
    "$BL_VENV/bin/python" -c 'import pjsua2' \
        || { bl_log "pjsua2 from $wheel does not import: see the error above"; return 1; }
}
