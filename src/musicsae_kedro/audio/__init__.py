"""Audio I/O and the transforms preprocessing applies, in DESIGN.md's order."""
