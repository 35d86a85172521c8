#!/usr/bin/env bash
# Build the images: rankexp-operator, rankexp-ranker (serve/route/simulate on
# onnxruntime, no torch), rankexp-ranker-demo (plus models/v1 and models/v2 under
# /models) and rankexp-prometheus (Debian's prometheus package).
#
#   images/build.sh [MODELS_DIR]      # prints one image per line, <version>-<content hash> tags
#
# Base image: $BASE_IMAGE (default python:3.11-slim-bookworm). Where it is not present
# and cannot be pulled, a Debian base with Debian's python3 is built (images/base).
# Python packages are installed on this host (uv, from PyPI with the host's CA bundle)
# into each build context's site/ folder, so no build step needs the network or a CA
# bundle, and no bundle is baked into an image. Layers are cached by Docker; site/ is
# reinstalled only when the sources or pyproject.toml change.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
models="${1:-$repo/models}"
log() { printf 'images: %s\n' "$*" >&2; }

version="$(awk -F'"' '/^version = / { print $2; exit }' "$repo/pyproject.toml")"
base="${BASE_IMAGE:-python:3.11-slim-bookworm}"
if ! docker image inspect "$base" >/dev/null 2>&1 \
   && ! timeout 60 docker pull -q "$base" >/dev/null 2>&1; then
  log "$base cannot be pulled: building a Debian base"
  base="$(bash "$here/base/build.sh")"
fi
log "base image: $base"

ctx="$repo/.build/images"
mkdir -p "$ctx"
uv=(python3 -m uv)
"${uv[@]}" --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
sources_hash="$(cd "$repo" && find pyproject.toml ranker operator/rankexp -type f \( -name '*.py' -o -name '*.html' -o -name '*.css' -o -name pyproject.toml \) \
  | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"

site() {  # CONTEXT EXTRA
  local dir="$ctx/$1" extra="$2"
  if [[ "$(cat "$dir/.site-stamp" 2>/dev/null)" == "$sources_hash" ]]; then
    log "$1: site/ up to date"
    return
  fi
  log "$1: installing rankexp[$extra] for python 3.11 into site/"
  rm -rf "$dir/site" && mkdir -p "$dir"
  "${uv[@]}" pip install --quiet --target "$dir/site" --python-version 3.11 \
    --python-platform x86_64-manylinux_2_28 --no-compile --link-mode copy "$repo[$extra]"
  rm -rf "$dir/site/bin"
  echo "$sources_hash" >"$dir/.site-stamp"
}
wrapper() {  # CONTEXT NAME MODULE
  mkdir -p "$ctx/$1/bin"
  printf '#!/bin/sh\nexec python3 -m %s "$@"\n' "$3" >"$ctx/$1/bin/$2"
  chmod 0755 "$ctx/$1/bin/$2"
}

mkdir -p "$ctx/ranker" "$ctx/operator" "$ctx/prometheus"
site ranker serve
site operator operator
wrapper ranker ranker ranker.cli
wrapper ranker rankexp rankexp.cli
wrapper operator rankexp-operator rankexp
wrapper operator rankexp rankexp.cli
wrapper operator rankexp-podsd rankexp.runtime.podsd
cp "$here/ranker/Dockerfile" "$ctx/ranker/Dockerfile"
cp "$here/operator/Dockerfile" "$ctx/operator/Dockerfile"
cp "$here/prometheus/Dockerfile" "$ctx/prometheus/Dockerfile"

# the demo's models: what serving reads (no torch weights)
rm -rf "$ctx/ranker/models" && mkdir -p "$ctx/ranker/models"
for profile in v1 v2; do
  src="$models/$profile"
  [[ -f "$src/user_tower.onnx" ]] || { log "$src has no ONNX towers: run make models"; exit 1; }
  mkdir -p "$ctx/ranker/models/$profile"
  cp "$src"/{user_tower.onnx,item_tower.onnx,feature_schema.json,snapshot.npz,metadata.json} \
    "$ctx/ranker/models/$profile/"
done

# Debian's prometheus package, unpacked
if [[ ! -x "$ctx/prometheus/prometheus/usr/bin/prometheus" ]]; then
  log "prometheus: unpacking Debian's package"
  tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) \
    || { apt-get update -qq && (cd "$tmp" && apt-get download prometheus >/dev/null); }
  rm -rf "$ctx/prometheus/prometheus"
  dpkg-deb -x "$tmp"/prometheus_*.deb "$ctx/prometheus/prometheus"
  rm -rf "$tmp"
fi

# Each build is also tagged <version>-<content hash> (sources, base, Dockerfiles, models):
# a cluster that already runs <version> gets a new tag, so `helm upgrade` rolls the pods.
content_hash="$( { echo "$sources_hash $base"; cat "$here"/*/Dockerfile "$models"/*/metadata.json; } \
  | sha256sum | cut -c1-12)"

build() {  # NAME CONTEXT [TARGET]
  local name="$1" context="$2" target="${3:-}" args=()
  [[ -n "$target" ]] && args+=(--target "$target")
  log "building $name"
  # the legacy builder: BuildKit needs the buildx plugin, which Debian's docker.io lacks
  local log_file="$ctx/build-${name##*/}.log"
  if ! DOCKER_BUILDKIT=0 docker build --build-arg "BASE_IMAGE=$base" "${args[@]}" \
      -t "$name" -t "$name-$content_hash" "$context" >"${log_file/:/-}" 2>&1; then
    tail -n 30 "${log_file/:/-}" >&2
    exit 1
  fi
  echo "$name-$content_hash"
}
build "rankexp/rankexp-ranker:$version" "$ctx/ranker" ranker
build "rankexp/rankexp-ranker-demo:$version" "$ctx/ranker" demo
build "rankexp/rankexp-operator:$version" "$ctx/operator"
build "rankexp/rankexp-prometheus:$version" "$ctx/prometheus"
