"""Tracks -> clips -> manifest and held-out split -> cached codec tokens."""
