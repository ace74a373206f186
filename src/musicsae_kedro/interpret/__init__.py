"""Interpretation of trained SAEs: feature statistics at corpus scale, labels (tag
enrichment offline, a multimodal LLM online), CLAP margins of the labels (the CLAP model
itself lives in ``musicsae_kedro.clap``), the concept ladder on labelled corpora, and a
static HTML feature report per site."""
