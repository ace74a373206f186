"""RAVE (acids-ircam) adapter: TorchScript exports stepped block by block."""

from musicsae_kedro.models.rave.adapter import RaveAdapter

__all__ = ["RaveAdapter"]
