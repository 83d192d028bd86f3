#!/usr/bin/env bash
# Build localhost/debian-base:bookworm from Debian's mirror (no container registry needed):
# debootstrap --variant=minbase, then `podman import`. Skipped when the image already exists.
#
#   usage: [MIRROR=http://...] [IMAGE=localhost/debian-base:bookworm] [INCLUDE=pkg,pkg] base-image.sh
# INCLUDE: packages debootstrap adds to minbase (stock-image.sh uses it); none by default.
# Needs CONTAINERS_CONF set as setup-podman.sh says, and root (debootstrap chroots).
set -euo pipefail

IMAGE=${IMAGE:-localhost/debian-base:bookworm}
SUITE=bookworm

if podman image exists "$IMAGE"; then
    echo "base-image: $IMAGE exists, skipped"
    exit 0
fi

# The mirror apt itself uses: deb822 (.sources) first, then one-line lists.
if [ -z "${MIRROR:-}" ]; then
    MIRROR=$(grep -hoE '^URIs:[[:space:]]*\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null \
             | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
fi
if [ -z "${MIRROR:-}" ]; then
    MIRROR=$(grep -hE '^deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
             | awk '{print $2}' | grep -v -- '-security' | grep -i debian | head -n1 || true)
fi
MIRROR=${MIRROR:-http://deb.debian.org/debian}
echo "base-image: debootstrap $SUITE from $MIRROR"

work=$(mktemp -d /var/tmp/debian-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs

# minbase: essential + apt only (~80 MB unpacked). Nothing else is included by default: each image
# adds its own packages, so this one base serves python, postgres and the S3 stand-in alike.
include=()
[ -n "${INCLUDE:-}" ] && include=("--include=$INCLUDE")
debootstrap --variant=minbase "${include[@]}" "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log"; exit 1; }

# The same sources apt uses on the host (main + updates + security), one-line format.
security=${MIRROR%/debian}/debian-security
cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $security $SUITE-security main
EOF
# Container hygiene, as the official debian image does: no recommends, no docs, clean apt caches.
cat >"$rootfs/etc/apt/apt.conf.d/90container" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/90container" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
       "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log
# Podman fills these in at run time.
: >"$rootfs/etc/resolv.conf"; : >"$rootfs/etc/hostname"

tar --numeric-owner -C "$rootfs" -c . \
    | podman import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$IMAGE" >/dev/null
podman image ls "$IMAGE"
