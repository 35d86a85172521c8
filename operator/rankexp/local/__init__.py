"""The local test and development harness: NOT part of the product.

Everything here runs real processes on 127.0.0.1 for tests, benchmarks and demos:

* :mod:`rankexp.local.cluster`: etcd + kube-apiserver on loopback, with certificates from
  :mod:`rankexp.local.pki` and binaries built by ``make envtest``
  (:mod:`rankexp.local.binaries`);
* :mod:`rankexp.local.process`: the generic :class:`~rankexp.local.process.Process`
  runner, ``wait_for`` and ``free_ports``;
* :mod:`rankexp.local.prom`: Debian's Prometheus with file-based scrape targets;
* :mod:`rankexp.local.stack`: rankers and a router without Kubernetes;
* :mod:`rankexp.local.kubelet`: a stand-in for the kubelet and the Deployment controller
  that runs an Experiment's Deployments as local processes;
* :mod:`rankexp.local.probe`: HTTP readiness probes;
* :mod:`rankexp.local.demo` (``make demo``, on kind: :mod:`rankexp.local.kind`) and
  :mod:`rankexp.local.feed_demo` (``make demo-feed``, no Kubernetes).

The operator (:mod:`rankexp.runtime.handlers` and what it calls) never imports this package.
"""
