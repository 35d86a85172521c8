#!/usr/bin/env bash
# Build gitops-health (tools/gitops-health/), the program that tests our Argo CD
# resource customizations (health.lua, actions) with Argo CD's own Lua VM and our
# Flux healthCheckExprs with Flux's own CEL status reader, from the Go module proxy.
#
# The binary goes to a cache outside the clone, keyed by the recipe:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/rankexp/tools/gitops-health-<hash>/gitops-health
# where <hash> covers go.mod, go.sum and the .go files, so every clone at the same
# recipe shares one binary and a changed recipe gets a new entry. When the entry
# exists and the binary runs, nothing is built and this takes well under a second.
# A build goes to a temporary directory next to the cache entry and is renamed into
# place only once the binary works, so an interrupted build never leaves a
# half-filled entry. Concurrent runs are serialised with a lock file.
#
# Go's module and build caches are the ones `go env` reports, the same ones
# tools/envtest.sh and tools/kind/tools.sh use, so downloads (k8s.io/*) and
# compiled packages are shared with those builds.
#
# The last line on stdout is the binary's path; progress goes to stderr.
# Environment: GITOPS_HEALTH_FORCE=1 rebuilds even when the cache is good.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
recipe="$here/gitops-health"

log() { printf 'gitops-health: %s\n' "$*" >&2; }

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/rankexp/tools"

# Identifies what the binary is built from. Only go.mod, go.sum and *.go matter to
# `go build`; sorting by name makes the hash independent of directory order.
recipe_sum() {
  (cd "$recipe" && find . -maxdepth 1 -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}
sum="$(recipe_sum)"
dest="$cache_root/gitops-health-$sum"
bin="$dest/gitops-health"

# True when dir holds a binary that runs (`version` loads nothing but build info).
cache_ok() {
  [[ -x "$1/gitops-health" ]] && "$1/gitops-health" version >/dev/null 2>&1
}

# Warm path: no lock, no Go needed.
if [[ "${GITOPS_HEALTH_FORCE:-0}" != 1 ]] && cache_ok "$dest"; then
  touch "$dest" # marks the entry as in use for the pruning below
  log "cached: $bin"
  echo "$bin"
  exit 0
fi

mkdir -p "$cache_root"
# One lock for all gitops-health entries: builds share Go's caches anyway, and
# pruning old entries (below) must not race with another build.
exec 9>"$cache_root/.lock-gitops-health"
if ! flock -n 9; then
  log "another build is running: waiting for $cache_root/.lock-gitops-health"
  flock 9
fi
# Another run may have finished the same build while this one waited.
if [[ "${GITOPS_HEALTH_FORCE:-0}" != 1 ]] && cache_ok "$dest"; then
  log "cached: $bin"
  echo "$bin"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  log "Go is needed to build gitops-health: install Go >= $(awk '$1 == "go" { print $2 }' "$recipe/go.mod")"
  exit 1
fi

# Holding the lock, any leftover temporary directory is from a killed run.
rm -rf "$cache_root/.build-gitops-health."* "$cache_root/.old-gitops-health."*
tmp="$(mktemp -d "$cache_root/.build-gitops-health.XXXXXX")"
chmod 755 "$tmp"
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "building $bin with $(go version)"
log "(cold: a few minutes, most of it Argo CD's and Kubernetes' packages; GOMODCACHE=$(go env GOMODCACHE) GOCACHE=$(go env GOCACHE))"
start=$SECONDS
(
  cd "$recipe"
  # GOWORK=off: a go.work above the clone must not change the build.
  # -mod=readonly: go.mod and go.sum are used as committed, never rewritten; a
  #   missing go.sum line is an error here rather than a silent download.
  # CGO_ENABLED=0, -trimpath: a static binary that does not depend on this
  #   machine's paths or C toolchain. -s -w: no symbol/DWARF tables (smaller).
  export CGO_ENABLED=0 GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false"
  go build -trimpath -ldflags "-s -w" -o "$tmp/gitops-health" .
)
if ! cache_ok "$tmp"; then
  log "the freshly built $tmp/gitops-health does not run"
  exit 1
fi

# Swap in: move any broken entry aside (one rename), rename the new one into
# place (one rename), then delete the old one.
if [[ -e "$dest" ]]; then
  old="$(mktemp -d "$cache_root/.old-gitops-health.XXXXXX")"
  mv -T "$dest" "$old/entry"
  mv -T "$tmp" "$dest"
  rm -rf "$old"
else
  mv -T "$tmp" "$dest"
fi
trap - EXIT
# Entries of other recipes (older commits, other clones) not used for 30 days go;
# a clone that still needs one rebuilds it from the warm Go build cache.
find "$cache_root" -mindepth 1 -maxdepth 1 -type d -name 'gitops-health-*' \
  ! -name "gitops-health-$sum" -mtime +30 -exec rm -rf {} + 2>/dev/null || true
log "built in $((SECONDS - start)) s: $bin"
echo "$bin"
