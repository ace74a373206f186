"""The CLAP model a stage scores with (``interpret.clap``, ``ablate.generation.clap``,
``intervene.<run>.clap``)."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from musicsae_kedro.config import ParamsModel


class ClapConfig(ParamsModel):
    """CLAP scoring of labels against audio (``interpret.clap``)."""

    spec: str = Field("debug", min_length=1)
    """``debug`` (tiny random CLAP, offline), a local ``save_pretrained`` folder, or a hub
    id such as ``laion/clap-htsat-unfused``."""
    weights_trained: bool = True
    """``false`` declares the CLAP's weights untrained: its margins are then not measured,
    as for ``debug`` (random weights by construction)."""
    device: str = "cpu"
    """Where CLAP runs."""
    clips_per_feature: PositiveInt = 5
    """Held-out top clips of a feature each label is compared with."""
    random_clips: PositiveInt = 16
    """Random held-out clips every label is also compared with (the baseline)."""
    batch_size: PositiveInt = 8
    """Clips per CLAP audio forward pass."""
    seed: int = 0
    """Seeds the debug model, the random baseline clips and CLAP's random crops."""

    @property
    def measures(self) -> bool:
        """Whether this CLAP's similarities mean anything: not with random weights."""
        return self.spec != "debug" and self.weights_trained
