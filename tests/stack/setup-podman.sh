#!/usr/bin/env bash
# Install podman + podman-compose + debootstrap from Debian (bookworm) and write a containers.conf
# that works on this kind of machine (no Docker engine, root, 2 cores, nested in a sandbox).
#
#   usage: setup-podman.sh CONTAINERS_CONF_PATH
#   then:  export CONTAINERS_CONF=CONTAINERS_CONF_PATH
#
# Idempotent: packages already installed are skipped (apt-get update runs only if something is
# missing); the config file is rewritten only when its content differs.
set -euo pipefail

conf=${1:?usage: $0 /path/to/containers.conf}

# podman + runc (the runtime containers.conf selects; crun is not installed), the compose wrapper,
# debootstrap for the base image; netavark + aardvark-dns give name resolution between
# containers of a compose project (pulled in by podman's Recommends too, named here so a
# --no-install-recommends install keeps them); uidmap/slirp4netns/fuse-overlayfs for completeness.
pkgs=(podman podman-compose debootstrap runc netavark aardvark-dns uidmap slirp4netns fuse-overlayfs
      containernetworking-plugins iptables)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if ((${#missing[@]})); then
    SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
    echo "setup-podman: installing ${missing[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
else
    echo "setup-podman: all packages present"
fi

mkdir -p "$(dirname "$conf")"
tmp=$(mktemp)
cat >"$tmp" <<'EOF'
# Selected with CONTAINERS_CONF=<this file>.
[containers]
# The sandbox's hard RLIMIT_NOFILE/NPROC are below podman's defaults (1048576): without this,
# every container fails "error setting rlimits for ready process: error setting rlimit type 7:
# operation not permitted: OCI permission denied".
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
EOF
if cmp -s "$tmp" "$conf" 2>/dev/null; then
    rm -f "$tmp"; echo "setup-podman: $conf unchanged"
else
    mv "$tmp" "$conf"; chmod 644 "$conf"; echo "setup-podman: wrote $conf"
fi

podman --version
podman-compose version 2>/dev/null | tail -n 2 || true
