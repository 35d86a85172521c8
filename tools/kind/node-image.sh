#!/usr/bin/env bash
# Build a kind node image from Debian packages and Go modules only, the way kind's own
# base and node images are made (kind's images/base and pkg/build/nodeimage, read from
# the Go module cache), for machines where kindest/node cannot be pulled.
#
#   tools/kind/node-image.sh            # prints the image name as the last line
#
# Cached by the recipe: the image is tagged rankexp/kind-node:<k8s>-<recipe hash> and
# reused while it exists; the compiled binaries and the Debian root filesystem are
# cached under ${XDG_CACHE_HOME:-~/.cache}/rankexp/kind-node/. Where kindest/node can be
# pulled (KIND_NODE_IMAGE=kindest/node:<tag>), nothing is built. KIND_NODE_FORCE=1 rebuilds
# (with XDG_CACHE_HOME and GOCACHE pointing at empty folders: a cold build).
#
# Steps (each says what it is for):
#  1. binaries: kubelet, kubeadm, kubectl and the control plane from tools/envtest (the
#     same module `make envtest` builds, sharing its Go build cache); etcd (its
#     cmd/etcd); containerd v2 (kubelet 1.36 drops containerd 1.x), runc (cgo, seccomp),
#     crictl, the CNI plugins ptp/host-local/loopback/portmap and coredns from the Go
#     module proxy; pause compiled with `gcc -static` from the kubernetes module.
#  2. root filesystem: `debootstrap --variant=minbase bookworm` with kind's package list,
#     kind's base files (entrypoint, systemd units, containerd config) and the changes
#     of kind's base Dockerfile, plus this recipe's node settings (files/).
#  3. control-plane images: each binary alone in an image named exactly as `kubeadm
#     config images list` prints (kube-proxy on the node's filesystem, for iptables).
#  4. the node image: the root filesystem imported into Docker, the images imported
#     (pinned) into its containerd's k8s.io namespace by a containerd started inside a
#     build container, committed with kind's entrypoint.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=versions.sh
source "$here/versions.sh"
log() { printf 'node-image: %s\n' "$*" >&2; }

if [[ -n "${KIND_NODE_IMAGE:-}" ]]; then
  log "using $KIND_NODE_IMAGE as given"
  echo "$KIND_NODE_IMAGE"
  exit 0
fi

envtest="$repo/tools/envtest"
k8s_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v[0-9]/ { print $2; exit }' "$envtest/go.mod")"
[[ "$k8s_version" =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]] || { log "no k8s.io/kubernetes version"; exit 1; }
k8s_major="${BASH_REMATCH[1]}" k8s_minor="${BASH_REMATCH[2]}"
recipe_hash="$(
  cd "$repo" && find tools/kind tools/envtest/go.mod tools/envtest/go.sum tools/envtest/cmd \
    -type f ! -name '*.md' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12
)"
image="rankexp/kind-node:$k8s_version-$recipe_hash"
if [[ "${KIND_NODE_FORCE:-0}" != 1 ]] && docker image inspect "$image" >/dev/null 2>&1; then
  log "cached: $image"
  echo "$image"
  exit 0
fi

# build tools from Debian where missing: debootstrap, jq (cri-base.json), libseccomp-dev
# (runc's cgo), and docker itself (tools/docker/ensure-docker.sh)
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v jq >/dev/null || missing+=(jq)
command -v gcc >/dev/null || missing+=(gcc libc6-dev)
[[ -f /usr/include/seccomp.h ]] || missing+=(libseccomp-dev)
if ((${#missing[@]})); then
  [[ "$(id -u)" == 0 && -f /etc/debian_version ]] \
    || { log "missing build tools: ${missing[*]} (install them)"; exit 1; }
  log "installing ${missing[*]} from Debian"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi
bash "$repo/tools/docker/ensure-docker.sh"

cache="$CACHE_ROOT/kind-node"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
start=$SECONDS
gomodcache="$(go env GOMODCACHE)"

# ---------------------------------------------------------------- 1. binaries
# keyed by what they are built from (versions and the envtest module), not the whole recipe
bins_hash="$(
  cd "$repo" && find tools/kind/versions.sh tools/envtest/go.mod tools/envtest/go.sum \
    tools/envtest/cmd -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12
)"
bin="$cache/bin-$k8s_version-$bins_hash"
if [[ ! -x "$bin/.done" ]]; then
  log "1/4 compiling the node's binaries (cold: many minutes, most of it Kubernetes)"
  rm -rf "$bin.tmp" && mkdir -p "$bin.tmp"
  export GOWORK=off GOFLAGS=-buildvcs=false
  ver_pkg=k8s.io/component-base/version
  ldflags="-s -w -X $ver_pkg.gitVersion=$k8s_version -X $ver_pkg.gitMajor=$k8s_major"
  ldflags+=" -X $ver_pkg.gitMinor=$k8s_minor -X $ver_pkg.gitTreeState=clean"
  (
    cd "$envtest"
    CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "$ldflags" -o "$bin.tmp/" \
      k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubeadm \
      k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kube-proxy ./cmd/etcd
  )
  export GOBIN="$bin.tmp"
  (cd "$here" && CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
    -tags "no_aufs no_zfs no_btrfs no_devmapper" \
    "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION")
  (cd "$here" && CGO_ENABLED=1 go install -trimpath -tags seccomp \
    -ldflags "-X main.version=${RUNC_VERSION#v}" "github.com/opencontainers/runc@$RUNC_VERSION")
  (cd "$here" && CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION")
  (cd "$here" && CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
    "github.com/containernetworking/plugins/plugins/main/ptp@$CNI_PLUGINS_VERSION" \
    "github.com/containernetworking/plugins/plugins/main/loopback@$CNI_PLUGINS_VERSION" \
    "github.com/containernetworking/plugins/plugins/ipam/host-local@$CNI_PLUGINS_VERSION" \
    "github.com/containernetworking/plugins/plugins/meta/portmap@$CNI_PLUGINS_VERSION")
  (cd "$here" && CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
    "github.com/coredns/coredns@$COREDNS_VERSION")
  pause_src="$gomodcache/k8s.io/kubernetes@$k8s_version/build/pause/linux/pause.c"
  gcc -Os -static -Wall -Werror -DVERSION="v$PAUSE_VERSION" -o "$bin.tmp/pause" "$pause_src"
  strip "$bin.tmp/pause"
  touch "$bin.tmp/.done" && chmod +x "$bin.tmp/.done"
  rm -rf "$bin" && mv "$bin.tmp" "$bin"
else
  log "1/4 cached: binaries in $bin"
fi
images_listed="$("$bin/kubeadm" config images list --kubernetes-version "$k8s_version" 2>/dev/null)"
for want in "coredns:$COREDNS_VERSION" "pause:$PAUSE_VERSION" "etcd:$ETCD_IMAGE_TAG"; do
  grep -q "/$want\$" <<<"$images_listed" \
    || { log "kubeadm wants other images than versions.sh says:"$'\n'"$images_listed"; exit 1; }
done

# ----------------------------------------------------------- 2. root filesystem
rootfs_tar="$cache/rootfs-$DEBIAN_SUITE-$(printf '%s' "$NODE_PACKAGES" | sha256sum | cut -c1-12).tar"
if [[ ! -f "$rootfs_tar" ]]; then
  log "2/4 debootstrap $DEBIAN_SUITE (minbase + kind's packages)"
  tmp_root="$(mktemp -d "$cache/debootstrap.XXXXXX")"
  trap 'rm -rf "$tmp_root"' EXIT
  debootstrap --variant=minbase --include="$NODE_PACKAGES" "$DEBIAN_SUITE" "$tmp_root" \
    "$DEBIAN_MIRROR" >"$cache/debootstrap.log" 2>&1 \
    || { tail -n 30 "$cache/debootstrap.log" >&2; exit 1; }
  rm -rf "$tmp_root"/var/cache/apt/archives/*.deb "$tmp_root"/var/lib/apt/lists/*
  tar -C "$tmp_root" --numeric-owner -cf "$rootfs_tar.tmp" .
  mv "$rootfs_tar.tmp" "$rootfs_tar"
  rm -rf "$tmp_root"
  trap - EXIT
else
  log "2/4 cached: $rootfs_tar"
fi

work="$(mktemp -d "$cache/build.XXXXXX")"
cleanup() {
  [[ -n "${builder:-}" ]] && docker rm -f "$builder" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
root="$work/rootfs"
mkdir -p "$root"
tar -C "$root" --numeric-owner -xf "$rootfs_tar"

kind_base="$gomodcache/sigs.k8s.io/kind@$KIND_VERSION/images/base/files"
[[ -d "$kind_base" ]] || (cd "$here" && go mod download "sigs.k8s.io/kind@$KIND_VERSION")
# kind's base files, with the modes its Dockerfile gives them
install -m 0755 "$kind_base"/usr/local/bin/* "$root/usr/local/bin/"
mkdir -p "$root/kind/bin" "$root/LICENSES"
cp -r "$kind_base/kind/." "$root/kind/" && chmod -R u=rwX,go=rX "$root/kind"
chmod 0755 "$root"/kind/bin/*
install -m 0644 "$kind_base"/etc/crictl.yaml "$root/etc/"
mkdir -p "$root/etc/containerd" "$root/etc/default" "$root/etc/sysctl.d" \
  "$root/etc/systemd/system/kubelet.service.d"
install -m 0644 "$kind_base"/etc/containerd/* "$root/etc/containerd/"
install -m 0644 "$kind_base"/etc/default/* "$root/etc/default/"
install -m 0644 "$kind_base"/etc/sysctl.d/* "$root/etc/sysctl.d/"
install -m 0644 "$kind_base"/etc/systemd/system/*.service "$kind_base"/etc/systemd/system/*.slice \
  "$root/etc/systemd/system/"
install -m 0644 "$kind_base"/etc/systemd/system/kubelet.service.d/* \
  "$root/etc/systemd/system/kubelet.service.d/"
# kind's base Dockerfile: trim systemd for a container, enable the node's services
find "$root/lib/systemd/system/sysinit.target.wants/" -name "systemd-tmpfiles-setup.service" -delete
rm -f "$root"/lib/systemd/system/multi-user.target.wants/* "$root"/etc/systemd/system/*.wants/* \
  "$root"/lib/systemd/system/local-fs.target.wants/* \
  "$root"/lib/systemd/system/sockets.target.wants/*udev* \
  "$root"/lib/systemd/system/sockets.target.wants/*initctl* \
  "$root"/lib/systemd/system/basic.target.wants/*
echo "ReadKMsg=no" >>"$root/etc/systemd/journald.conf"
ln -sf /usr/lib/systemd/systemd "$root/sbin/init"
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
for unit in kubelet containerd undo-mount-hacks; do
  ln -sf "/etc/systemd/system/$unit.service" "$root/etc/systemd/system/multi-user.target.wants/$unit.service"
done
ln -sf /dev/null "$root/etc/systemd/system/systemd-binfmt.service"
mkdir -p "$root/etc/kubernetes/manifests" "$root/opt/cni/bin"

# binaries where kind's units and kubeadm expect them
install -m 0755 "$bin"/{containerd,ctr,containerd-shim-runc-v2,crictl} "$root/usr/local/bin/"
install -m 0755 "$bin/runc" "$root/usr/local/sbin/runc"
install -m 0755 "$bin"/{ptp,loopback,host-local,portmap} "$root/opt/cni/bin/"
install -m 0755 "$bin"/{kubelet,kubeadm,kubectl} "$root/usr/bin/"
printf '%s' "$k8s_version" >"$root/kind/version"
# kind's base image: the runtime spec containerd starts every container from
"$bin/ctr" oci spec \
  | jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
  | jq 'del(.process.rlimits)' >"$root/etc/containerd/cri-base.json"

# this recipe's node settings (see tools/kind/README.md)
#  - negative oom_score_adj is refused on these VMs
#  - the sandbox image is the pause image built here
sed -i -e 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' \
  -e "s#sandbox_image = .*#sandbox_image = \"registry.k8s.io/pause:$PAUSE_VERSION\"#" \
  "$root/etc/containerd/config.toml"
grep -q 'restrict_oom_score_adj = true' "$root/etc/containerd/config.toml"
#  - one node, no kindnetd (not on the proxy): a static ptp network for the pods
install -D -m 0644 "$here/files/10-rankexp-ptp.conflist" "$root/etc/cni/net.d/10-rankexp-ptp.conflist"

# ------------------------------------------------------------------ 3. images
log "3/4 control-plane images"
docker_import_binary() {  # NAME IMAGE ENTRYPOINT-JSON
  local name="$1" image="$2" entrypoint="$3" dir="$work/img-$1"
  mkdir -p "$dir/usr/local/bin"
  install -m 0755 "$bin/$name" "$dir/usr/local/bin/$name"
  [[ "$name" == coredns ]] && ln -s /usr/local/bin/coredns "$dir/coredns"
  [[ "$name" == pause ]] && ln -s /usr/local/bin/pause "$dir/pause"
  tar -C "$dir" --numeric-owner -c . | docker import \
    --change "ENV PATH=/usr/local/bin:/usr/bin:/bin" --change "ENTRYPOINT $entrypoint" \
    - "$image" >/dev/null
}
images=()
for name in kube-apiserver kube-controller-manager kube-scheduler; do
  docker_import_binary "$name" "registry.k8s.io/$name:$k8s_version" "[\"/usr/local/bin/$name\"]"
  images+=("registry.k8s.io/$name:$k8s_version")
done
docker_import_binary etcd "registry.k8s.io/etcd:$ETCD_IMAGE_TAG" '["/usr/local/bin/etcd"]'
docker_import_binary coredns "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" '["/coredns"]'
docker_import_binary pause "registry.k8s.io/pause:$PAUSE_VERSION" '["/pause"]'
images+=("registry.k8s.io/etcd:$ETCD_IMAGE_TAG" "registry.k8s.io/coredns/coredns:$COREDNS_VERSION"
         "registry.k8s.io/pause:$PAUSE_VERSION")
# kube-proxy programs iptables: the node's own filesystem (iptables, conntrack) under it
install -m 0755 "$bin/kube-proxy" "$work/kube-proxy"
tar -C "$root" --numeric-owner -c --exclude=./usr/bin/kubelet --exclude=./usr/bin/kubeadm . \
  | docker import --change "ENTRYPOINT [\"/usr/local/bin/kube-proxy\"]" - rankexp/kube-proxy-base:build >/dev/null
proxy_dir="$work/img-kube-proxy" && mkdir -p "$proxy_dir"
printf 'FROM rankexp/kube-proxy-base:build\nCOPY kube-proxy /usr/local/bin/kube-proxy\n' >"$proxy_dir/Dockerfile"
cp "$work/kube-proxy" "$proxy_dir/"
DOCKER_BUILDKIT=0 docker build -q -t "registry.k8s.io/kube-proxy:$k8s_version" "$proxy_dir" >/dev/null 2>&1 \
  || docker build -q -t "registry.k8s.io/kube-proxy:$k8s_version" "$proxy_dir" >/dev/null
docker rmi rankexp/kube-proxy-base:build >/dev/null
images+=("registry.k8s.io/kube-proxy:$k8s_version")
for want in $images_listed; do
  printf '%s\n' "${images[@]}" | grep -qx "$want" || { log "no image built for $want"; exit 1; }
done
docker save -o "$work/images.tar" "${images[@]}"

# -------------------------------------------------------------- 4. node image
log "4/4 node image: root filesystem + images imported into the node's containerd"
tar -C "$root" --numeric-owner -c . | docker import - "rankexp/kind-node-base:build" >/dev/null
builder="$(docker run -d --privileged --entrypoint sleep rankexp/kind-node-base:build infinity)"
docker exec "$builder" bash -c 'nohup containerd >/tmp/containerd.log 2>&1 &'
for _ in $(seq 1 60); do
  docker exec "$builder" ctr info >/dev/null 2>&1 && break
  sleep 0.5
done
docker exec -i "$builder" ctr --namespace=k8s.io images import \
  --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests - \
  <"$work/images.tar" >/dev/null 2>"$work/import.log" || { cat "$work/import.log" >&2; exit 1; }
imported="$(docker exec "$builder" ctr --namespace=k8s.io images list -q 2>/dev/null)"
for want in $images_listed; do
  grep -qx "$want" <<<"$imported" || { log "$want is not in the node's containerd"; exit 1; }
done
docker exec "$builder" pkill containerd
sleep 1
docker exec "$builder" rm -rf /tmp/containerd.log
docker commit "$builder" rankexp/kind-node-committed:build >/dev/null
docker rm -f "$builder" >/dev/null && builder=""
# kind's node image metadata (commit cannot set STOPSIGNAL): systemd is told it runs in a
# container, and stops on SIGRTMIN+3
final="$work/final" && mkdir -p "$final"
cat >"$final/Dockerfile" <<'DOCKERFILE'
FROM rankexp/kind-node-committed:build
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
CMD []
DOCKERFILE
DOCKER_BUILDKIT=0 docker build -q -t "$image" "$final" >/dev/null 2>"$work/final.log" \
  || { cat "$work/final.log" >&2; exit 1; }
docker rmi rankexp/kind-node-committed:build rankexp/kind-node-base:build "${images[@]}" >/dev/null 2>&1 || true
log "built $image in $((SECONDS - start)) s"
echo "$image"
