# The two commands a new user needs (each creates .venv on first use):
#   make demo   run every default pipeline on the embedded synthetic corpus
#   make test   run the test suite (what .ci/run calls)
SHELL := /bin/bash
export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
VENV := .venv

.PHONY: venv demo evaluate test lint viz mlflow-ui clean-demo

venv:
	@./scripts/bootstrap.sh

demo: venv
	$(VENV)/bin/kedro run

# The evaluation env, limited to what the concept ladders need (docs/evaluation.md,
# "Evaluation env"): preprocess, extract and train on 2,000 tracks, then the ladders.
evaluate: venv
	$(VENV)/bin/kedro run --env evaluate \
	  --to-nodes musicgen.l1.concept_ladder,musicgen.l3.concept_ladder,rave.l16.concept_ladder

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
