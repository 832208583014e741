# Causal adjustment and off-policy evaluation (see docs/causal.md).
# The Open Bandit Dataset sample comes from the obp sdist, fetched with pip into $(TIERSCALE_CACHE).

OBP_SDIST = $(TIERSCALE_CACHE)/downloads/obp/obp-0.5.7.tar.gz
EVAL_OPE_ARGS ?=

.PHONY: obd-data eval-ope test-causal

obd-data: $(OBP_SDIST) ## fetch the obp 0.5.7 sdist (Open Bandit Dataset sample) into the cache

$(OBP_SDIST):
	$(PYTHON) -m tierscale_operator.causal.obd download

# One BLAS thread: the reward models are 24-feature logistic regressions, where BLAS threads add
# overhead and no speed.
eval-ope: obd-data ## check the off-policy estimators on the Open Bandit Dataset -> reports/ope.json (about 2 min)
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(PYTHON) bench/causal/eval_ope.py --out reports/ope.json $(EVAL_OPE_ARGS)

test-causal: obd-data ## the causal adjustment and gate tests (estimators, position bias, confounders, OBD checks)
	$(PYTHON) -m pytest -ra tests/causal
