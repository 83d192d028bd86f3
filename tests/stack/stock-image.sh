#!/usr/bin/env bash
# Build localhost/debian-stock:bookworm: what a README user on a stock Debian 12 has, for
# test_debian_first_run.py. Skipped when the image exists (base-image.sh does the work).
#
#   usage: [MIRROR=http://...] [IMAGE=localhost/debian-stock:bookworm] stock-image.sh
# Needs CONTAINERS_CONF set as setup-podman.sh says, and root (debootstrap chroots).
#
# Why minbase + four packages and not debootstrap's default variant: the default variant
# (required + important priorities) has no python3 at all, while every installed Debian 12 has one
# (the "standard system utilities" task pulls it in through reportbug; the cloud images through
# cloud-init). minbase + python3 is the smallest such system, so anything `make demo` needs
# beyond it shows up here; a real install only has more. make, git (to clone) and ca-certificates
# are what the README's reader brings. Deliberately absent: python3-pip, python3-venv,
# python3-distutils, curl, and any compiler.
set -euo pipefail
export IMAGE=${IMAGE:-localhost/debian-stock:bookworm}
export INCLUDE=python3,make,git,ca-certificates
exec "$(dirname "$0")/base-image.sh"
