"""Steering generation through SAE features (``docs/intervention.md``): strategies that
edit a site's latents during generation (the SAE error term kept), and the measurements
of what the edits did to the generated music."""
