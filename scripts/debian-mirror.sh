# Sourced by the build scripts that fetch a Debian source package with apt's own source
# client (scripts/pjsua2/build.sh, scripts/spandsp/build.sh): which Debian archive this
# machine already uses, so no host is written in the repo.

debian_mirror_uri() {
    # The first plain Debian archive URI in this machine's apt sources (deb822 or one-line).
    { grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{for(i=2;i<=NF;i++) print $i}'
      grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | sed -E 's/\[[^]]*\]//' | awk '{print $2}'
    } | grep -E '/debian/?$' | head -n1 || true
}
