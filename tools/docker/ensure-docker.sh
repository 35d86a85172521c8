#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`.
#
# Where one runs already (a laptop, CI with Docker), nothing happens. Where none runs
# and this is Debian as root, it installs Debian's docker.io, containerd, runc and
# iptables and starts dockerd in the background (log: /var/log/rankexp-dockerd.log).
#
# On VMs whose kernel capability bounding set lacks CAP_SYS_RESOURCE, privileged
# containers (kind's nodes) fail in runc; then dockerd gets tools/docker/runc-wrapper
# (installed to /usr/local/lib/rankexp/) as its default runtime, which drops that one
# capability from each container's spec. Exits 1 with the reason where no engine can
# be had (not root, not Debian). Safe to run again: it only starts what is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { printf 'docker: %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then
  log "an engine is running"
  exit 0
fi
if [[ "$(id -u)" != 0 || ! -f /etc/debian_version ]]; then
  log "no Docker engine answers and this is not Debian as root: start one (docker info must work)"
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 \
   || ! command -v iptables >/dev/null 2>&1; then
  log "installing Debian's docker.io containerd runc iptables"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io containerd runc iptables >/dev/null
fi

args=(--log-level=warn)
# Bit 24 of the bounding set is CAP_SYS_RESOURCE.
bounding="$(awk '/^CapBnd:/ { print $2 }' /proc/self/status)"
if (( (0x$bounding >> 24 & 1) == 0 )); then
  install -D -m 0755 "$here/runc-wrapper" /usr/local/lib/rankexp/runc-wrapper
  real_runc="$(command -v runc)"
  log "the kernel withholds CAP_SYS_RESOURCE: runtime wrapper around $real_runc"
  args+=(--add-runtime "rankexp-runc=/usr/local/lib/rankexp/runc-wrapper"
         --default-runtime rankexp-runc)
  export RANKEXP_REAL_RUNC="$real_runc"
fi

log "starting dockerd"
setsid nohup dockerd "${args[@]}" >>/var/log/rankexp-dockerd.log 2>&1 </dev/null &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    log "engine up"
    exit 0
  fi
  sleep 1
done
log "dockerd did not come up; last lines of /var/log/rankexp-dockerd.log:"
tail -n 20 /var/log/rankexp-dockerd.log >&2
exit 1
