"""Interpretation of trained SAEs: feature statistics at corpus scale, labels (tag
enrichment offline, a multimodal LLM online), CLAP scores, concept recovery on
ground-truth corpora, and a static HTML feature report per site."""
