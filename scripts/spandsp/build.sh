#!/usr/bin/env bash
# Builds spandsp 0.0.6 with the echo canceller's debug prints compiled out, as a shared
# library cached outside the repo, for the benchmarks' fair anchor (bench/bench_anchor.py,
# bench/bench_echo.py). Benchmarks only: nothing at runtime uses it.
#
# Why: Debian's libspandsp2 build of echo_can_update() prints two debug lines per sample
# to stdout; the benchmarks send them to /dev/null but still pay for formatting them.
#
# Source: Debian's `spandsp` source package, fetched with apt's own source client from the
# Debian mirror this machine's apt already uses (a temporary deb-src list derived from the
# machine's sources; no host is written here), as scripts/pjsua2/build.sh does; apt checks
# every file against the checksums of the signed Sources index and dpkg-source against the
# .dsc. We ask first for the exact source version of the installed libspandsp2 (machine's
# release, then unstable); if the mirror cannot serve it, for unstable's newest revision of
# the same upstream version (0.0.6+dfsg-2.2 differs from bookworm's -2 only in packaging:
# the 64-bit time_t rename and a warning flag, not in src/). Debian's patches are applied
# by dpkg-source, then echo-no-debug-prints.patch (beside this script); it is compiled with
# Debian's own flags (dpkg-buildflags), autoreconf and configure defaults, so the only difference from
# Debian's binary is the prints.
#
# Usage: scripts/spandsp/build.sh [--cached]  -> prints the path of the cached library
#   --cached: never build; print the path if it is cached, else exit 1 (bench/spandsp.py).
# The cache is $BRANCHLINE_CACHE (default ~/.cache/branchline)/spandsp/<upstream version>-
# printfree-<patch hash>-<arch>/ with libspandsp.so.2 and build-info.txt; reused when there.
# Building needs root once (build packages from apt): ~30 s on 2 cores, ~45 s with the
# first install of autoconf, automake and libtool; a cached build is found in ~25 ms.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PATCH="$HERE/echo-no-debug-prints.patch"
CACHE="${BRANCHLINE_CACHE:-$HOME/.cache/branchline}/spandsp"
log() { printf '[spandsp] %s\n' "$*" >&2; }
only_cached=0; [ "${1:-}" = "--cached" ] && only_cached=1

installed_source_version() {
    # Source version of the installed runtime library (libspandsp2, or libspandsp2t64 on
    # releases after the 64-bit time_t transition), e.g. 0.0.6+dfsg-2; empty when absent.
    local p
    for p in libspandsp2 libspandsp2t64; do
        if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            dpkg-query -W -f='${source:Version}' "$p"; return 0
        fi
    done
}
upstream_of() { local v="${1#*:}"; echo "${v%-*}"; }

want="$(installed_source_version)"
if [ -z "$want" ] && [ "$(id -u)" -eq 0 ] && [ "$only_cached" -eq 0 ]; then
    log "installing libspandsp-dev (Debian's spandsp, the one we compare against)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends libspandsp-dev >/dev/null
    want="$(installed_source_version)"
fi
if [ -z "$want" ]; then
    log "Debian's libspandsp2 is not installed (apt-get install libspandsp2 libspandsp-dev)"; exit 1
fi
upstream="$(upstream_of "$want")"
arch="$(dpkg --print-architecture)"
key="$upstream-printfree-$(sha256sum "$PATCH" | cut -c1-12)-$arch"
dest="$CACHE/$key"
if [ -f "$dest/libspandsp.so.2" ] && [ -f "$dest/build-info.txt" ]; then
    echo "$dest/libspandsp.so.2"; exit 0
fi
if [ "$only_cached" -eq 1 ]; then
    log "no print-free spandsp $upstream in $CACHE; as root run once: sudo BRANCHLINE_CACHE=\"${BRANCHLINE_CACHE:-$HOME/.cache/branchline}\" $HERE/build.sh"
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    log "the print-free spandsp $upstream is not built yet and building it needs root once (build packages from apt):" \
        "sudo BRANCHLINE_CACHE=\"${BRANCHLINE_CACHE:-$HOME/.cache/branchline}\" $HERE/build.sh"
    exit 1
fi
t0=$SECONDS

export DEBIAN_FRONTEND=noninteractive
deps=(build-essential dpkg-dev xz-utils patch autoconf automake libtool libtiff-dev libjpeg-dev)
missing=()
for p in "${deps[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing build packages: ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    }
fi
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT

source "$HERE/../debian-mirror.sh"
uri="$(debian_mirror_uri)"
[ -n "$uri" ] || { log "no Debian archive found in /etc/apt/sources*: cannot fetch the spandsp source"; exit 1; }
release="$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")"
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/src"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
{ [ -n "$release" ] && echo "deb-src [signed-by=$keyring] $uri $release main"
  echo "deb-src [signed-by=$keyring] $uri unstable main"; } > "$work/apt/sources.list"
A=(-o "Dir::Etc::sourcelist=$work/apt/sources.list" -o Dir::Etc::sourceparts=-
   -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache" -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root)
apt-get "${A[@]}" update -qq >/dev/null
log "fetching Debian's spandsp source package $want"
if ! (cd "$work/src" && apt-get "${A[@]}" source --download-only -qq "spandsp=$want" >"$work/fetch.log" 2>&1); then
    rm -f "$work"/src/*
    got="$(apt-cache "${A[@]}" showsrc spandsp | sed -n 's/^Version: //p' | sort -V | tail -n1)"
    if [ -z "$got" ] || [ "$(upstream_of "$got")" != "$upstream" ]; then
        tail -3 "$work/fetch.log" >&2
        log "cannot fetch spandsp $want, and no other Debian revision of $upstream (newest: ${got:-none})"; exit 1
    fi
    log "the mirror cannot serve $want ($(grep -m1 -oE '[0-9]{3} [A-Za-z ]+' "$work/fetch.log" || echo failed)); using $got (same upstream source)"
    (cd "$work/src" && apt-get "${A[@]}" source --download-only -qq "spandsp=$got" >/dev/null)
    want="$got"
fi
dsc="$(ls "$work"/src/*.dsc | head -n1)"
(cd "$work/src" && dpkg-source -x "$dsc" tree >"$work/unpack.log" 2>&1) \
    || { tail -10 "$work/unpack.log" >&2; exit 1; }
src="$work/src/tree"
patch -d "$src" -p1 --forward --quiet < "$PATCH"

log "building spandsp $want without the echo canceller's debug prints"
(
    cd "$src"
    # Debian's compiler flags for this package (debian/rules appends one warning flag).
    DEB_CFLAGS_MAINT_APPEND="$(sed -n 's/^export DEB_CFLAGS_MAINT_APPEND *= *//p' debian/rules)"
    export DEB_CFLAGS_MAINT_APPEND
    eval "$(dpkg-buildflags --export=sh)"
    multiarch="$(dpkg-architecture -qDEB_HOST_MULTIARCH)"
    # Debian's patches touch configure.ac: regenerate as debhelper's dh_autoreconf does.
    autoreconf -fi >"$work/autoreconf.log" 2>&1 || { tail -20 "$work/autoreconf.log" >&2; exit 1; }
    ./configure --prefix=/usr --libdir="/usr/lib/$multiarch" --disable-static \
        --disable-dependency-tracking --disable-silent-rules >"$work/configure.log" 2>&1 \
        || { tail -20 "$work/configure.log" >&2; exit 1; }
    make -j"$(nproc)" -C src >"$work/make.log" 2>&1 || { tail -30 "$work/make.log" >&2; exit 1; }
    printf 'CFLAGS=%s\nCPPFLAGS=%s\nLDFLAGS=%s\n' "$CFLAGS" "$CPPFLAGS" "$LDFLAGS" > "$work/flags.txt"
)
so="$(readlink -f "$src/src/.libs/libspandsp.so.2")"
[ -f "$so" ] || { log "the build produced no libspandsp.so.2"; exit 1; }
# The debug prints must be gone from echo_can_update (their format strings with them).
if grep -qa 'Narrowband score' "$so"; then log "the patched library still has the debug prints"; exit 1; fi

mkdir -p "$CACHE"
tmp="$(mktemp -d "$CACHE/.$key.XXXX")"
cp "$so" "$tmp/libspandsp.so.2"
strip --strip-unneeded "$tmp/libspandsp.so.2"
{
    echo "source_version=$want"
    echo "installed_source_version=$(installed_source_version)"
    echo "dsc_sha256=$(sha256sum "$dsc" | cut -d' ' -f1)"
    echo "patch=scripts/spandsp/$(basename "$PATCH")"
    echo "patch_sha256=$(sha256sum "$PATCH" | cut -d' ' -f1)"
    cat "$work/flags.txt"
    echo "cc=$(cc --version | head -n1)"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "build_seconds=$((SECONDS - t0))"
} > "$tmp/build-info.txt"
rm -rf "$dest"; mv "$tmp" "$dest"
log "cached $dest/libspandsp.so.2 (built in $((SECONDS - t0)) s)"
echo "$dest/libspandsp.so.2"
