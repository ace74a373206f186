# The two commands a new user needs (each creates .venv on first use):
#   make demo   run every default pipeline on the embedded synthetic corpus
#   make test   run the test suite (what .ci/run calls)
# and, to retrain the embedded models (docs/models.md, "Reproduce"):
#   make pretrain [PRETRAIN_OUTPUT_DIR=src/musicsae_kedro/embedded]
SHELL := /bin/bash
export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
VENV := .venv

.PHONY: venv demo evaluate pretrain test lint viz mlflow-ui clean-demo

venv:
	@./scripts/bootstrap.sh

demo: venv
	$(VENV)/bin/kedro run

# The evaluation env, limited to what the concept ladders need (docs/evaluation.md,
# "Evaluation env"): preprocess, extract and train on 2,000 tracks, then the ladders.
evaluate: venv
	$(VENV)/bin/kedro run --env evaluate \
	  --to-nodes musicgen.l1.concept_ladder,musicgen.l3.concept_ladder,rave.l16.concept_ladder

# The pretrain pipeline's two streams (pretrain_musicgen, pretrain_small) side by side,
# one thread each; logs in logs/<stream>.log; fails if either fails; a rerun resumes.
# Weights go to data/06_models/pretrain/ unless PRETRAIN_OUTPUT_DIR says otherwise
# (src/musicsae_kedro/embedded publishes them as the shipped models).
PRETRAIN_OUTPUT_DIR ?= data/06_models/pretrain
pretrain: venv
	KEDRO=$(VENV)/bin/kedro ./scripts/pretrain.sh --params=pretrain_output_dir=$(PRETRAIN_OUTPUT_DIR)

test: venv
	$(VENV)/bin/python -m pytest -q

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

viz: venv
	$(VENV)/bin/kedro viz build

mlflow-ui: venv
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db

clean-demo:
	rm -rf data/0[1-9]_* mlflow.db mlartifacts logs
