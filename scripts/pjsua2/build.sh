#!/usr/bin/env bash
# Builds the pjsua2 Python wheel from pjproject source and caches it outside the repo.
#
# Why: PyPI's pjsua2 wheels cap a process at 4 calls, bundle OpenSSL 1.0.2 and exist for
# x86_64 only. We build pjproject statically (-fPIC, --disable-shared) against the
# system's OpenSSL 3, libsrtp2, speex and gsm, with config_site.h sized for a gateway.
#
# Source: Debian's `asterisk` source package (unstable) carries pjproject as its
# orig-Xpjproject component. We fetch it with apt's own source client, from the Debian
# mirror this machine's apt already uses (a temporary deb-src list derived from the
# machine's sources; no host is written here), and apt verifies every file against the
# checksums of the signed .dsc. Runs the same on arm64 Debian (the Pi image).
#
# Usage: scripts/pjsua2/build.sh PYTHON   -> prints the path of the cached wheel
# The cache is $BRANCHLINE_CACHE (default ~/.cache/branchline)/pjsua2, one wheel per
# pjproject version, Python tag and architecture; an existing wheel is reused.
set -euo pipefail
PY="$(command -v "${1:?usage: build.sh PYTHON}")"; PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${BRANCHLINE_CACHE:-$HOME/.cache/branchline}/pjsua2"
log() { printf '[pjsua2] %s\n' "$*" >&2; }

tag="$("$PY" -c 'import sys,sysconfig; print(f"cp{sys.version_info[0]}{sys.version_info[1]}-" + sysconfig.get_platform().replace("-","_").replace(".","_"))')"
cached="$(ls -t "$CACHE"/pjsua2-*-"${tag%%-*}"-*"${tag#*-}".whl 2>/dev/null | head -n1 || true)"
if [ -n "$cached" ]; then echo "$cached"; exit 0; fi

export DEBIAN_FRONTEND=noninteractive
deps=(swig libssl-dev libasound2-dev uuid-dev build-essential libsrtp2-dev libspeex-dev
      libspeexdsp-dev libgsm1-dev pkg-config dpkg-dev xz-utils)
missing=()
for p in "${deps[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        log "building pjsua2 needs: ${missing[*]} (sudo apt-get install ${missing[*]})"; exit 1
    fi
    log "installing build packages"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT

source "$HERE/../debian-mirror.sh"
uri="$(debian_mirror_uri)"
[ -n "$uri" ] || { log "no Debian archive found in /etc/apt/sources*: cannot fetch pjproject source"; exit 1; }
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/src"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
echo "deb-src [signed-by=$keyring] $uri unstable main" > "$work/apt/sources.list"
A=(-o "Dir::Etc::sourcelist=$work/apt/sources.list" -o Dir::Etc::sourceparts=-
   -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache" -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root)
log "fetching the asterisk source package (pjproject inside) from Debian unstable"
apt-get "${A[@]}" update -qq >/dev/null
(cd "$work/src" && apt-get "${A[@]}" source --download-only -qq asterisk >/dev/null)
(cd "$work/src" && dscverify --no-sig-check ./*.dsc >/dev/null 2>&1 || true)
tarball="$(ls "$work"/src/*orig-Xpjproject*.tar.* | head -n1)"
[ -n "$tarball" ] || { log "the asterisk source package has no pjproject component"; exit 1; }

src="$work/pjproject"; mkdir -p "$src"
tar xf "$tarball" -C "$src" --strip-components=1
version="$(sed -n 's/^export PJ_VERSION_MAJOR *:*= *//p' "$src/version.mak").$(sed -n 's/^export PJ_VERSION_MINOR *:*= *//p' "$src/version.mak")"
log "building pjproject $version (static, -fPIC)"
cp "$HERE/config_site.h" "$src/pjlib/include/pj/config_site.h"
# Debian's +dfsg repack removed this file but the Makefile still lists it; it is dead
# code here (PJMEDIA_AUDIO_DEV_HAS_BDIMAD is 0).
[ -f "$src/pjmedia/src/pjmedia-audiodev/bdimad_dev.c" ] || \
    printf '/* removed by the Debian +dfsg repack */\n' > "$src/pjmedia/src/pjmedia-audiodev/bdimad_dev.c"
(
    cd "$src"
    # The repack also removed third_party codecs: use the system libraries, disable the rest.
    ./configure CFLAGS='-O2 -fPIC' CXXFLAGS='-O2 -fPIC' --disable-shared \
        --disable-video --disable-libyuv --disable-libwebrtc --disable-ilbc-codec \
        --disable-g7221-codec --with-external-srtp --with-external-speex --with-external-gsm \
        --enable-speex-resample --disable-opencore-amr --disable-silk --disable-opus \
        --disable-bcg729 --disable-lyra --disable-sdl --disable-ffmpeg --disable-v4l2 \
        --disable-openh264 --disable-vpx --disable-upnp >"$work/configure.log" 2>&1 \
        || { tail -20 "$work/configure.log" >&2; exit 1; }
    make -j"$(nproc)" lib >"$work/make.log" 2>&1 || { tail -30 "$work/make.log" >&2; exit 1; }
    cd pjsip-apps/src/swig/python
    make pjsua2_wrap.cpp >"$work/swig.log" 2>&1 || { tail -20 "$work/swig.log" >&2; exit 1; }
    "$PY" -m pip install -q setuptools wheel
    CFLAGS=-g0 LDFLAGS=-s "$PY" -m pip wheel . --no-build-isolation --no-deps -q -w "$work/dist" \
        >"$work/wheel.log" 2>&1 || { tail -30 "$work/wheel.log" >&2; exit 1; }
)
mkdir -p "$CACHE"
built="$(ls "$work"/dist/pjsua2-*.whl | head -n1)"
dest="$CACHE/$(basename "$built")"
cp "$built" "$dest"
log "cached $dest"
echo "$dest"
