"""musicsae-kedro: sparse-autoencoder features in generative music models.

The domain library (``audio``, ``corpora``, ``preprocessing``, ``models``,
``activations``, ``sae``) never imports Kedro or MLflow; the Kedro glue lives in
``datasets``, ``pipelines``, ``hooks``, ``settings``, ``pipeline_registry`` and ``cli``.
"""

__version__ = "0.1.0"
