"""musicsae-kedro: sparse-autoencoder features in generative music models.

The domain library is built in floors, each importing only the floors below it
(``docs/architecture.md``), and never imports Kedro or MLflow; the Kedro glue lives in
``datasets``, ``pipelines``, ``hooks``, ``settings``, ``pipeline_registry`` and ``cli``.
"""

__version__ = "0.1.0"
