# rankexp: `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
UV          := $(PYTHON_BOOT) -m uv
CACHE_DIR   ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/rankexp
MODELS      ?= models
PYTEST_ARGS ?=
# PYTEST_WORKERS > 0 runs the tests in parallel (pytest-xdist, --dist loadgroup: tests that
# share a module or package fixture stay on one worker; each worker starts its own session
# servers). The default is one process: on 2 cores, three workers running the closed-loop
# tests at once (an operator, rankers, a router and simulated users each) were slower than
# one and broke their waits (see docs/contributing.md, "How tests run").
PYTEST_WORKERS ?= 0

export UV_LINK_MODE ?= copy

##@ Help
.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} \
	  /^##@/ {printf "\n%s\n", substr($$0, 5)} \
	  /^[a-zA-Z0-9_-]+:.*##/ {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

##@ Setup
.PHONY: setup
setup: $(VENV)/.stamp ## Create .venv with every dependency (idempotent; seconds when nothing changed)

$(VENV)/.stamp: pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON_BOOT) -m pip install --quiet uv
	@test -x $(PY) || $(UV) venv --quiet --python $(PYTHON_BOOT) $(VENV)
	$(UV) pip install --quiet --python $(PY) -e '.[dev]'
	@touch $@

.PHONY: models
models: setup $(MODELS)/v1/user_tower.onnx $(MODELS)/v2/user_tower.onnx ## Train the reference models into models/v1 (weaker) and models/v2 (stronger), with their ONNX towers

$(MODELS)/v1/metadata.json:
	$(VENV)/bin/ranker train --profile v1 --out $(MODELS)/v1

$(MODELS)/v2/metadata.json:
	$(VENV)/bin/ranker train --profile v2 --out $(MODELS)/v2

# Training writes the ONNX towers too; this adds them to models trained before it did.
$(MODELS)/%/user_tower.onnx: | $(MODELS)/%/metadata.json
	$(VENV)/bin/ranker export-onnx $(MODELS)/$*

.PHONY: evaluate
evaluate: models ## Offline AUC / NDCG@10 and expected CTR under the true click model, per model
	$(VENV)/bin/ranker evaluate $(MODELS)/v1 $(MODELS)/v2

##@ Use
.PHONY: demo
demo: models envtest ## The whole product on kind: engine, node image, images, chart, an experiment v1 vs v2 to its decision
	$(PY) -m rankexp.local.demo --models $(MODELS)

.PHONY: demo-down
demo-down: ## Delete the demo's kind cluster
	$(PY) -m rankexp.local.demo --down

.PHONY: demo-feed
demo-feed: models ## Without Kubernetes: serve v2, rank a feed for user 1 and print it beside the ground truth
	$(PY) -m rankexp.local.feed_demo --model $(MODELS)/v2 --user 1

##@ Test
.PHONY: test
test: setup models envtest gitops-health versitygw ## Unit and integration tests (real servers on 127.0.0.1), PYTEST_WORKERS in parallel; prints the 15 slowest
	$(PY) -m pytest -m "not e2e" -n $(PYTEST_WORKERS) --dist loadgroup --durations=15 $(PYTEST_ARGS)

.PHONY: e2e
e2e: models envtest gitops-health ## kind e2e: images, node image, helm install, v1 vs v2 Promoted, a slow treatment RolledBack (needs a Docker engine; installs one on Debian as root)
	@# The long builds run here, outside pytest's timeouts; where no Docker engine can be
	@# had, the e2e tests skip and say why.
	if bash tools/docker/ensure-docker.sh; then \
	  bash tools/kind/tools.sh >/dev/null && bash tools/kind/node-image.sh >/dev/null \
	  && bash images/build.sh $(MODELS) >/dev/null; \
	fi
	$(PY) -m pytest -m e2e tests/e2e $(PYTEST_ARGS)

.PHONY: lint
lint: setup ## ruff, mypy (strict) and the architecture contracts (lint-imports; [tool.importlinter] in pyproject.toml)
	$(VENV)/bin/ruff check ranker operator tests bench
	$(VENV)/bin/ruff format --check ranker operator tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

.PHONY: fmt
fmt: setup ## Apply ruff's formatting and import order
	$(VENV)/bin/ruff check --fix ranker operator tests bench
	$(VENV)/bin/ruff format ranker operator tests bench

##@ Docs (the MkDocs site in docs/; README.md is the front page)
.PHONY: docs
docs: setup ## Build the docs site strictly (mkdocs build --strict) into .build/site
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir .build/site

DOCS_PORT ?= 8000
.PHONY: docs-serve
docs-serve: setup ## Serve the docs site with live reload on http://127.0.0.1:DOCS_PORT (8000; loopback only)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --strict --dev-addr 127.0.0.1:$(DOCS_PORT)

##@ Benchmarks (print figures; never pass/fail on timing)
.PHONY: bench-ranker
bench-ranker: models ## Ranker /rank latency at 200 req/s and saturation: framework floor, fast (onnx, torch), naive; share of the floor
	$(PY) bench/bench_ranker.py --model $(MODELS)/v2

.PHONY: bench-catalog
bench-catalog: setup ## Top-50 over synthetic 10k/100k/1M-item catalogs: exact scan vs IVF index, recall@50, p50/p99, memory (several minutes)
	$(PY) bench/bench_catalog.py

.PHONY: bench-router
bench-router: models ## Latency the router adds (p50/p99) and saturation throughput vs direct, same run
	cd bench && ../$(PY) bench_router.py --model ../$(MODELS)/v2

.PHONY: bench-loop
bench-loop: models envtest ## Closed loop, real intervals: time for the operator to decide v1 vs v2 (CRD defaults; sample ramp)
	$(PY) bench/bench_loop.py --models $(MODELS)

.PHONY: bench-interleaving
bench-interleaving: models ## Interleaving vs A/B in the ground-truth world: users to decide (v1 vs v2, near-identical v2 retrains), ratio, A/A false positives, direction agreement
	$(PY) bench/bench_interleaving.py --models $(MODELS)

.PHONY: bench-scale
bench-scale: envtest ## The operator with 100, 300 and 1,000 Experiments (real API server and Prometheus, generated series): tick latency and lag p50/p99, RSS, CPU, API req/s, 429s (~25 min)
	$(PY) bench/bench_scale.py

.PHONY: bench-models
bench-models: models versitygw ## ranker fetch-model from a local S3 server (versitygw): 10 MB, 100 MB, 1 GB models, MB/s against raw GET, peak RSS
	$(PY) bench/bench_models.py

.PHONY: bench-stats
bench-stats: setup ## Simulation: A/A false positives (sequential vs peeking), power, SRM detection, CUPED vs unadjusted
	$(PY) bench/bench_stats.py

.PHONY: bench-latency
bench-latency: setup ## Simulation of the latency non-inferiority guardrail: +10/+20/+50 ms p95 detection, A/A false alarms over 20 looks, bootstrap time per analysis (~2 min)
	$(PY) bench/bench_latency_guardrail.py

##@ GitOps (Argo CD and Flux health checks in gitops/)
.PHONY: gitops
gitops: setup ## Render gitops/argocd/argocd-cm.yaml and gitops/flux/kustomization.yaml from the tested health checks
	$(PY) gitops/render.py

.PHONY: gitops-health
gitops-health: ## Build tools/gitops-health: Argo CD's Lua engine and Flux's CEL status reader from the Go module proxy (cached; ~5 min cold)
	bash tools/gitops-health.sh >/dev/null

.PHONY: versitygw
versitygw: ## Build versitygw, the S3 server of the model-storage tests, from the Go module proxy (cached; ~3 min CPU cold)
	bash tools/versitygw.sh >/dev/null

##@ Kubernetes (real control plane for tests)
.PHONY: envtest
envtest: ## Build kube-apiserver, etcd and kubectl from the Go module proxy into $(CACHE_DIR)/<version>/ (cached)
	bash tools/envtest.sh

##@ Images and clusters (build recipes in tools/ and images/; cached outside the clone)
.PHONY: docker
docker: ## Make sure a Docker engine runs (on Debian as root: installs and starts docker.io)
	bash tools/docker/ensure-docker.sh

.PHONY: tools
tools: ## kind and helm from the Go module proxy into $(CACHE_DIR)/tools/bin (cached)
	bash tools/kind/tools.sh

.PHONY: node-image
node-image: docker ## The kind node image from Debian packages and Go modules (cached by recipe; ~15 min cold)
	bash tools/kind/node-image.sh

.PHONY: images
images: docker models ## rankexp-operator, rankexp-ranker(-demo) and rankexp-prometheus images
	bash images/build.sh $(MODELS)

.PHONY: chart-lint
chart-lint: tools ## helm lint and helm template of charts/rankexp
	$(CACHE_DIR)/tools/bin/helm lint charts/rankexp --kube-version 1.36.3
	$(CACHE_DIR)/tools/bin/helm template rankexp charts/rankexp --kube-version 1.36.3 >/dev/null

.PHONY: crds
crds: setup ## Render crds/*.yaml and the docs' CRD reference (docs/reference/*.md) from the pydantic models in rankexp.api
	$(PY) -m rankexp.api render crds --out crds --out charts/rankexp/crds
	$(PY) -m rankexp.api render reference --out docs/reference

##@ Data path
.PHONY: load
load: models ## Locust, headless and bounded (20 users, 20 s), against a local v1/v2 router on 127.0.0.1
	$(PY) -m rankexp.local.stack -- $(VENV)/bin/locust -f tests/load_test.py --headless \
	  -u 20 -r 10 -t 20s --host {router} --only-summary

SOAK_SECONDS ?= 600
.PHONY: soak
soak: models ## Soak, bounded, 127.0.0.1 only: locust through a local v1/v2 router at 70 % of measured saturation for SOAK_SECONDS (600 s); per-minute requests, failures, p50/p99, RSS
	$(PY) bench/soak.py --models $(MODELS) --seconds $(SOAK_SECONDS)

.PHONY: simulate
simulate: models ## Ground-truth users through a local v1/v2 50/50 router for 20 s
	$(PY) -m rankexp.local.stack -- $(VENV)/bin/ranker simulate --target {router} --duration 20
