#!/usr/bin/env bash
# Build the real Kubernetes control-plane binaries the tests run (kube-apiserver,
# kubectl, etcd) from the Go module proxy, using the recipe in tools/envtest/.
#
# The binaries go to a cache outside the clone, keyed by the Kubernetes version:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/rankexp/<k8s-version>/bin/{kube-apiserver,kubectl,etcd}
# so every clone on the machine shares them. When they already exist, match the
# recipe (go.mod, go.sum, cmd/) and run, nothing is built and this takes seconds.
# A build goes to a temporary directory next to the cache entry and is renamed
# into place only once all three binaries work, so an interrupted build never
# leaves a half-filled cache. Concurrent runs are serialised with a lock file.
#
# The last line on stdout is the bin directory; progress goes to stderr.
# Environment: ENVTEST_FORCE=1 rebuilds even when the cache is good.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
recipe="$here/envtest"

log() { printf 'envtest: %s\n' "$*" >&2; }

version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v[0-9]/ { print $2; exit }' "$recipe/go.mod")"
if [[ -z "$version" ]]; then
  log "cannot read the k8s.io/kubernetes version from $recipe/go.mod"
  exit 1
fi
if [[ ! "$version" =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]]; then
  log "unexpected k8s.io/kubernetes version '$version' in $recipe/go.mod"
  exit 1
fi
major="${BASH_REMATCH[1]}"
minor="${BASH_REMATCH[2]}"

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/rankexp"
dest="$cache_root/$version"

# Identifies the recipe the binaries were built from: a change of go.mod, go.sum
# or the etcd main (e.g. another etcd version) rebuilds the same cache entry.
recipe_sum() {
  (cd "$recipe" && find go.mod go.sum cmd -type f -print0 | LC_ALL=C sort -z \
    | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}
want_sum="$(recipe_sum)"

# True when dir/bin holds all three binaries, built from this recipe, and they run.
cache_ok() {
  local dir="$1" b
  [[ -f "$dir/recipe.sha256" && "$(cat "$dir/recipe.sha256")" == "$want_sum" ]] || return 1
  for b in kube-apiserver kubectl etcd; do
    [[ -x "$dir/bin/$b" ]] || return 1
  done
  "$dir/bin/kube-apiserver" --version 2>/dev/null | grep -qF "Kubernetes $version" || return 1
  "$dir/bin/kubectl" version --client >/dev/null 2>&1 || return 1
  "$dir/bin/etcd" --version >/dev/null 2>&1 || return 1
}

if [[ "${ENVTEST_FORCE:-0}" != 1 ]] && cache_ok "$dest"; then
  log "cached: $dest/bin (Kubernetes $version)"
  echo "$dest/bin"
  exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock-$version"
if ! flock -n 9; then
  log "another build of $version is running: waiting for $cache_root/.lock-$version"
  flock 9
fi
# Another run may have finished the same build while this one waited.
if [[ "${ENVTEST_FORCE:-0}" != 1 ]] && cache_ok "$dest"; then
  log "cached: $dest/bin (Kubernetes $version)"
  echo "$dest/bin"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  log "Go is needed to build the binaries: install Go >= $(awk '$1 == "go" { print $2 }' "$recipe/go.mod")"
  exit 1
fi

# Holding the lock, any leftover temp directory is from a killed run.
rm -rf "$cache_root/.build-$version."* "$cache_root/.old-$version."*
tmp="$(mktemp -d "$cache_root/.build-$version.XXXXXX")"
chmod 755 "$tmp"
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ver_pkg="k8s.io/component-base/version"
ldflags="-s -w"
ldflags+=" -X $ver_pkg.gitVersion=$version"
ldflags+=" -X $ver_pkg.gitMajor=$major -X $ver_pkg.gitMinor=$minor"
ldflags+=" -X $ver_pkg.gitTreeState=clean"

log "building kube-apiserver, kubectl and etcd for Kubernetes $version with $(go version)"
log "(a cold build takes several minutes; GOCACHE=$(go env GOCACHE))"
start=$SECONDS
(
  cd "$recipe"
  export CGO_ENABLED=0 GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false"
  go build -trimpath -ldflags "$ldflags" -o "$tmp/bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kubectl \
    ./cmd/etcd
)
echo "$want_sum" >"$tmp/recipe.sha256"
echo "$version" >"$tmp/VERSION"
if ! cache_ok "$tmp"; then
  log "the freshly built binaries in $tmp/bin do not run"
  exit 1
fi

# Swap in: move any stale entry aside (one rename), rename the new one into
# place (one rename), then delete the stale one.
if [[ -e "$dest" ]]; then
  old="$(mktemp -d "$cache_root/.old-$version.XXXXXX")"
  mv -T "$dest" "$old/entry"
  mv -T "$tmp" "$dest"
  rm -rf "$old"
else
  mv -T "$tmp" "$dest"
fi
trap - EXIT
log "built in $((SECONDS - start)) s: $dest/bin"
echo "$dest/bin"
