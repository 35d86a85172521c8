# Versions of everything the kind recipe builds (sourced by the scripts here).
# Kubernetes itself (kubelet, kubeadm, the control plane, kubectl, etcd) comes from
# tools/envtest/go.mod, the same module `make envtest` builds from.
KIND_VERSION=v0.33.0
HELM_VERSION=v3.22.0
CONTAINERD_VERSION=v2.3.7
RUNC_VERSION=v1.3.7
CRICTL_VERSION=v1.37.0
CNI_PLUGINS_VERSION=v1.9.1
# The images kubeadm v1.36.3 asks for (kubeadm config images list); the recipe checks.
COREDNS_VERSION=v1.14.2
PAUSE_VERSION=3.10.2
ETCD_IMAGE_TAG=3.6.8-0
DEBIAN_SUITE=bookworm  # systemd 252 still runs on cgroup v1 hosts; trixie's refuses
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# kind's base image package list (images/base/Dockerfile), for a minbase debootstrap
NODE_PACKAGES=systemd,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,fuse-overlayfs,nfs-common,open-iscsi,e2fsprogs,bash,ca-certificates,curl,jq,procps

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/rankexp"
TOOLS_BIN="$CACHE_ROOT/tools/bin"
