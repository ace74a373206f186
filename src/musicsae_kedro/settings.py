"""Kedro project settings."""

import os

# Opt out of telemetry before anything can send it (kedro-telemetry, MLflow).
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("WANDB_MODE", "disabled")  # dictionary_learning imports wandb

import warnings

# Third-party noise that says nothing about this project's run.
warnings.filterwarnings("ignore", module=r"kedro\.config\.omegaconf_config")
# kedro-mlflow's hook registers its resolver through omegaconf's deprecated call.
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated")
# kedro-mlflow subclasses MLflow's PythonModel without type hints, and MLflow warns
# about that when the class is created (the moment kedro loads kedro-mlflow's CLI, just
# after this file) under its own `simplefilter("once")`, which outranks any filter set
# here or in PYTHONWARNINGS. Creating the class now, with the warnings of that import
# recorded and dropped, keeps every command quiet; mlflow is imported by that CLI
# plugin anyway, so this costs no time.
with warnings.catch_warnings(record=True):
    import kedro_mlflow.mlflow.kedro_pipeline_model  # noqa: F401
# Namespaced dataset names (``musicgen.l2.activations``) contain dots on purpose.
warnings.filterwarnings("ignore", message="One or more dataset names contain '.'")

from musicsae_kedro.hooks import ProjectHooks  # noqa: E402

HOOKS = (ProjectHooks(),)
# Under `accelerate launch` / torchrun every process runs the hooks: only rank 0 tracks
# the run in MLflow (several processes creating one sqlite store at once would crash).
if int(os.environ.get("RANK", "0") or 0) > 0:
    DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow", "kedro-mlflow")  # dist name varies by version
# CONFIG_LOADER_CLASS: Kedro's default, OmegaConfigLoader (named here, it would be imported
# by every kedro command, --version included: 0.1 s of omegaconf and fsspec).
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An env (conf/local, --env X) overrides single nested keys, not whole blocks.
    "merge_strategy": {"parameters": "soft", "mlflow": "soft"},
    "config_patterns": {
        "mlflow": ["mlflow*", "mlflow*/**"],
    },
}
