#!/usr/bin/env bash
# Build versitygw (github.com/versity/versitygw, Apache-2.0), the S3 server the
# storage tests (tests/integration/storage/) and bench/bench_models.py run over a
# POSIX directory on 127.0.0.1, from the Go module proxy with the recipe in
# tools/versitygw/ (go.mod pins the release; go.sum the whole module graph).
#
# The binary goes to a cache outside the clone, keyed by the recipe:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/rankexp/tools/versitygw-<hash>/versitygw
# where <hash> covers go.mod and go.sum, so every clone at the same recipe shares
# one binary and a changed recipe gets a new entry. When the entry exists and the
# binary runs, nothing is built and this takes well under a second. A build goes
# to a temporary directory next to the cache entry and is renamed into place only
# once the binary works, so an interrupted build never leaves a half-filled entry.
# Concurrent runs are serialised with a lock file.
#
# Go's module and build caches are the ones `go env` reports, shared with
# tools/envtest.sh and tools/gitops-health.sh.
#
# The last line on stdout is the binary's path; progress goes to stderr.
# Environment: VERSITYGW_FORCE=1 rebuilds even when the cache is good.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
recipe="$here/versitygw"
pkg="github.com/versity/versitygw"

log() { printf 'versitygw: %s\n' "$*" >&2; }

version="$(awk -v m="$pkg" '$1 == m && $2 ~ /^v[0-9]/ { print $2; exit }' "$recipe/go.mod")"
if [[ -z "$version" ]]; then
  log "cannot read the $pkg version from $recipe/go.mod"
  exit 1
fi

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/rankexp/tools"

# Identifies what the binary is built from: only go.mod and go.sum matter (the
# main package is the module's own cmd/versitygw); sorted names make the hash
# independent of directory order.
recipe_sum() {
  (cd "$recipe" && printf '%s\0' go.mod go.sum | LC_ALL=C sort -z | xargs -0 sha256sum) \
    | sha256sum | cut -c1-16
}
sum="$(recipe_sum)"
dest="$cache_root/versitygw-$sum"
bin="$dest/versitygw"

# True when dir holds a binary that runs and reports the pinned version. (Captured,
# not piped to `grep -q`: grep would exit at the first line and, under pipefail, the
# SIGPIPE of versitygw writing its next line would fail the check at random.)
cache_ok() {
  local out
  [[ -x "$1/versitygw" ]] && out="$("$1/versitygw" --version 2>/dev/null)" \
    && [[ "$out" == *"Version  : $version"* ]]
}

# Warm path: no lock, no Go needed.
if [[ "${VERSITYGW_FORCE:-0}" != 1 ]] && cache_ok "$dest"; then
  touch "$dest" # marks the entry as in use for the pruning below
  log "cached: $bin ($version)"
  echo "$bin"
  exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock-versitygw"
if ! flock -n 9; then
  log "another build is running: waiting for $cache_root/.lock-versitygw"
  flock 9
fi
# Another run may have finished the same build while this one waited.
if [[ "${VERSITYGW_FORCE:-0}" != 1 ]] && cache_ok "$dest"; then
  log "cached: $bin ($version)"
  echo "$bin"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  log "Go is needed to build versitygw: install Go >= $(awk '$1 == "go" { print $2 }' "$recipe/go.mod")"
  exit 1
fi

# Holding the lock, any leftover temporary directory is from a killed run.
rm -rf "$cache_root/.build-versitygw."* "$cache_root/.old-versitygw."*
tmp="$(mktemp -d "$cache_root/.build-versitygw.XXXXXX")"
chmod 755 "$tmp"
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "building $pkg $version with $(go version)"
log "(cold: a few minutes; GOMODCACHE=$(go env GOMODCACHE) GOCACHE=$(go env GOCACHE))"
start=$SECONDS
(
  cd "$recipe"
  # GOWORK=off: a go.work above the clone must not change the build.
  # -mod=readonly: go.mod and go.sum are used as committed, never rewritten.
  # CGO_ENABLED=0, -trimpath: a static binary independent of this machine's paths
  #   and C toolchain. -s -w: no symbol/DWARF tables (smaller). -X: the version
  #   `versitygw --version` prints (upstream's Makefile sets the same variable).
  export CGO_ENABLED=0 GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false"
  go build -trimpath -ldflags "-s -w -X main.Version=$version" \
    -o "$tmp/versitygw" "$pkg/cmd/versitygw"
)
if ! cache_ok "$tmp"; then
  log "the freshly built $tmp/versitygw does not run"
  exit 1
fi

# Swap in: move any broken entry aside (one rename), rename the new one into
# place (one rename), then delete the old one.
if [[ -e "$dest" ]]; then
  old="$(mktemp -d "$cache_root/.old-versitygw.XXXXXX")"
  mv -T "$dest" "$old/entry"
  mv -T "$tmp" "$dest"
  rm -rf "$old"
else
  mv -T "$tmp" "$dest"
fi
trap - EXIT
# Entries of other recipes not used for 30 days go; a clone that still needs one
# rebuilds it from the warm Go build cache.
find "$cache_root" -mindepth 1 -maxdepth 1 -type d -name 'versitygw-*' \
  ! -name "versitygw-$sum" -mtime +30 -exec rm -rf {} + 2>/dev/null || true
log "built in $((SECONDS - start)) s: $bin"
echo "$bin"
