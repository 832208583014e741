# Q-learning policy and its simulator (see docs/policy.md). Pure numpy: no cluster, no GPU.

POLICY_PROFILE ?= operator/tierscale_operator/sim/profiles/measured.yaml
POLICY_TABLE ?= operator/tierscale_operator/policy/data/pretrained-qtable.json
POLICY_SEED ?= 7
BENCH_POLICY_ARGS ?=

.PHONY: bench-policy pretrain-policy calibrate-policy test-policy

bench-policy: ## policy vs static, tuned HPA/KEDA, one-step optimiser and oracle -> reports/bench-policy.{json,png}
	$(PYTHON) -m tierscale_operator.sim.bench --table $(POLICY_TABLE) --out reports/bench-policy.json \
		--plot reports/bench-policy.png $(BENCH_POLICY_ARGS)

pretrain-policy: ## train the shipped initial Q-table in the simulator (POLICY_SEED=7)
	$(PYTHON) -m tierscale_operator.sim.pretrain --seed $(POLICY_SEED) --out $(POLICY_TABLE)

calibrate-policy: ## measure the tier profile with the model server's evaluation and benchmark
	test -f reports/quality.json || $(MAKE) eval-quality
	test -f reports/bench-server.json || $(MAKE) bench-server
	$(PYTHON) -m tierscale_operator.sim.calibrate --quality reports/quality.json \
		--bench reports/bench-server.json --out $(POLICY_PROFILE)

test-policy: ## the policy and simulator tests
	$(PYTHON) -m pytest -ra tests/policy
