"""Running models to collect activations into the stores of ``activations``.

- ``extract``: teacher-forced collection (cached codes + text, one forward pass per batch
  of clips) and generation collection (the model's own output), planned per site and
  split, sharded across processes;
- ``prefetch``: the background thread that runs the next forward pass while the stores
  commit the previous tracks.

``activations`` stores and reads; only this package runs a model to fill it.
"""
