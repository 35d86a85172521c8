#!/usr/bin/env bash
# A Debian bookworm base with Debian's python3, for machines where the public base image
# (python:3.11-slim-bookworm) cannot be pulled: `debootstrap --variant=minbase` with
# python3 and tzdata, imported into Docker. Cached by tag; prints the image name.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { printf 'base: %s\n' "$*" >&2; }
suite=bookworm
packages=python3,tzdata
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
tag="rankexp/debian-python:$suite-$(printf '%s %s' "$packages" "$(sha256sum "$here/build.sh")" | sha256sum | cut -c1-8)"
if docker image inspect "$tag" >/dev/null 2>&1; then
  log "cached: $tag"
  echo "$tag"
  exit 0
fi
command -v debootstrap >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
log "debootstrap $suite with $packages"
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -n 20 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# an image, not a system: no package caches, no docs
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
  "$root"/usr/share/man/*
tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$tag" >/dev/null
log "built $tag"
echo "$tag"
