"""Audio I/O, the transforms preprocessing applies (in DESIGN.md's order) and spectral
measures of audio (multiscale spectral distance, pitch shift and its estimation)."""
