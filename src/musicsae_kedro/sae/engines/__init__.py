"""Training engines: trainer objects with dictionary_learning's trainer interface.

- ``sparse_topk``: TopK / BatchTopK trainers that decode and back-propagate through the
  active latents only (the default engine for ``topk`` and ``batch_topk``).
- ``reporting``: dictionary_learning's L1-style trainers (standard ReLU, gated), adapted
  to report their loss and count tokens since each latent fired, as our loop expects.

Modules here import dictionary_learning at module top; the architecture registry
imports them lazily (by ``"module:Class"`` path), only when a trainer is built.
"""
