#!/usr/bin/env bash
# `make tools`: kind and helm from the Go module proxy into
# ${XDG_CACHE_HOME:-~/.cache}/rankexp/tools/bin (outside the clone, so every clone on
# the machine reuses them). Prints that directory as the last line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.sh
source "$here/versions.sh"
log() { printf 'tools: %s\n' "$*" >&2; }

mkdir -p "$TOOLS_BIN"
export GOBIN="$TOOLS_BIN" CGO_ENABLED=0 GOWORK=off GOFLAGS=-buildvcs=false
if ! "$TOOLS_BIN/kind" version 2>/dev/null | grep -q "kind $KIND_VERSION "; then
  log "building kind $KIND_VERSION"
  (cd "$here" && go install "sigs.k8s.io/kind@$KIND_VERSION")
else
  log "cached: kind $KIND_VERSION"
fi
if ! "$TOOLS_BIN/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
  log "building helm $HELM_VERSION (a few minutes cold)"
  (cd "$here" && go install -ldflags "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
else
  log "cached: helm $HELM_VERSION"
fi
echo "$TOOLS_BIN"
