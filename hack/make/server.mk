# Model server: training, offline evaluation, the server and its benchmark (see docs/model-server.md).
# Checkpoints and data live under $(TIERSCALE_CACHE); a second run reuses them.

SERVER_TIER ?= small
SERVER_PORT ?= 8080
BENCH_ARGS ?=

.PHONY: train-tiers eval-quality serve bench-server test-server

train-tiers: ## fine-tune the small, medium and large tiers (cached; CPU, or CUDA when present)
	$(PYTHON) -m tierscale_server train

eval-quality: ## tiers and baselines side by side -> reports/quality.json (trains missing tiers)
	$(PYTHON) -m tierscale_server evaluate --output reports/quality.json

serve: ## run the model server on 127.0.0.1 (SERVER_TIER=small SERVER_PORT=8080)
	$(PYTHON) -m tierscale_server serve --tier $(SERVER_TIER) --port $(SERVER_PORT) --train-if-missing

bench-server: ## req/s and p50/p95/p99 per tier, side by side with TorchServe -> reports/bench-server.json
	$(PYTHON) -m tierscale_server.bench --output reports/bench-server.json $(BENCH_ARGS)

test-server: ## the model server's API and bad-input tests against a real server process
	$(PYTHON) -m pytest -ra tests/server
