"""The MusicGen adapter: codec tokens and teacher-forced decoder activations."""

from __future__ import annotations

import copy

import numpy as np
import torch

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.base import (
    FAMILIES,
    ActivationBatch,
    ModelAdapter,
    ModelConfig,
)
from musicsae_kedro.models.generation import (
    EditRows,
    GeneratedBatch,
    GenerationEdit,
    GenerationSettings,
)
from musicsae_kedro.models.musicgen import layout
from musicsae_kedro.models.musicgen.delay import (
    IGNORE_INDEX,
    decoder_inputs,
    delayed_labels,
    position_frames,
    stored_positions,
)
from musicsae_kedro.models.musicgen.loading import load_musicgen
from musicsae_kedro.models.musicgen.tracing import MusicgenTracer, SiteEdit


def undelay(tokens_BKL: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Generated tokens (BOS first, delay pattern applied) -> codes ``[B, K, n_frames]``:
    frame ``t`` of codebook ``k`` sits at sequence position ``t + k + 1``."""
    n_codebooks = tokens_BKL.shape[1]
    return torch.stack(
        [tokens_BKL[:, k, k + 1 : k + 1 + n_frames] for k in range(n_codebooks)], dim=1
    )


@FAMILIES.register("musicgen")
class MusicgenAdapter(ModelAdapter):
    """``facebook/musicgen-*`` (mono), embedded MusicGen-architecture models, ``debug``.

    The teacher-forced pass feeds what the model sees in training: EnCodec codes with
    the codebook delay pattern and BOS, T5 conditioning from the clip's text, and only
    the conditional branch (no classifier-free-guidance duplicate rows).
    """

    family = "musicgen"
    positions_policies = ("all_codebooks_real", "codebook0_real")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        if config.options:
            raise MusicSAEError(
                f"model {config.spec} (family musicgen)",
                f"MusicGen takes no `options` (got {sorted(config.options)})",
                "remove the `options` block",
            )
        self.model, self.tokenizer = load_musicgen(config)
        self.tracer = MusicgenTracer(self.model)
        decoder_cfg = self.model.config.decoder
        self.n_codebooks = int(decoder_cfg.num_codebooks)
        self.bos_id = int(decoder_cfg.bos_token_id)
        self.pad_id = int(decoder_cfg.pad_token_id)
        self.device = torch.device(config.device)

    @classmethod
    def layer_count(cls, config: ModelConfig) -> int:
        return layout.layer_count(config)

    def random_twin(self, seed: int) -> MusicgenAdapter:
        """A copy whose decoder (and text projection) is re-initialised with the
        decoder's own init, seeded; the codec and the text encoder are kept, so the twin
        reads the same codes under the same conditioning."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            model = copy.deepcopy(self.model)
            model.decoder.apply(model.decoder._init_weights)
            if getattr(model, "enc_to_dec_proj", None) is not None:
                model.enc_to_dec_proj.apply(model.decoder._init_weights)
        twin = copy.copy(self)
        twin.model = model.eval()
        twin.tracer = MusicgenTracer(twin.model)
        return twin

    @property
    def sample_rate(self) -> int:
        return int(self.model.config.audio_encoder.sampling_rate)

    @property
    def n_layers(self) -> int:
        return int(self.model.config.decoder.num_hidden_layers)

    @property
    def d_model(self) -> int:
        return int(self.model.config.decoder.hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.decoder.vocab_size)

    @torch.no_grad()
    def encode_audio(self, audio_BS: np.ndarray) -> np.ndarray:
        audio_B1S = torch.as_tensor(audio_BS, dtype=self.config.torch_dtype, device=self.device)
        codes_1BKT = self.model.audio_encoder.encode(audio_B1S[:, None, :]).audio_codes
        return codes_1BKT[0].to("cpu", torch.int32).numpy()

    def rows_per_clip(self, n_frames: int, policy: str) -> int:
        return len(self.site_positions(n_frames, policy))

    def site_positions(self, n_frames: int, policy: str) -> np.ndarray:
        """Sequence positions whose activations are stored (and edited by splices)."""
        return stored_positions(n_frames, self.n_codebooks, self.check_policy(policy))

    def text_inputs(self, texts: list[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(list(texts), padding=True, return_tensors="pt")
        return {
            "input_ids": encoded["input_ids"].to(self.device),
            "attention_mask": encoded["attention_mask"].to(self.device),
        }

    def model_inputs(self, codes_BKT: np.ndarray, texts: list[str]) -> dict[str, torch.Tensor]:
        """Keyword inputs of a teacher-forced ``model(**inputs)`` call."""
        codes = torch.as_tensor(np.asarray(codes_BKT), dtype=torch.long, device=self.device)
        batch, n_codebooks, _ = codes.shape
        if n_codebooks != self.n_codebooks:
            raise ValueError(f"codes have {n_codebooks} codebooks, the model {self.n_codebooks}")
        ids_BKL = decoder_inputs(codes, bos_id=self.bos_id, pad_id=self.pad_id)
        return {
            **self.text_inputs(texts),
            "decoder_input_ids": ids_BKL.reshape(batch * n_codebooks, -1),
        }

    def layer_activations(
        self, codes_BKT: np.ndarray, texts: list[str], layers: list[int], policy: str
    ) -> ActivationBatch:
        positions = self.site_positions(codes_BKT.shape[-1], policy)
        hidden = self.tracer.layer_outputs(layers, **self.model_inputs(codes_BKT, texts))
        index = torch.as_tensor(positions, device=self.device)
        return ActivationBatch(
            acts_BRD={layer: h_BLD.index_select(1, index) for layer, h_BLD in hidden.items()},
            frames_R=position_frames(positions),
        )

    def codebook_nll(
        self,
        codes_BKT: np.ndarray,
        texts: list[str],
        edits: dict[int, SiteEdit] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced codebook cross-entropy per clip: ``(nll_sum_B, tokens_B)``.

        Every codebook's label at every position counts once; labels outside each
        codebook's delayed span (delay padding) are masked. Sum over clips and divide
        for a corpus-mean CE (not a mean of per-clip ratios).
        """
        inputs = self.model_inputs(codes_BKT, texts)
        logits_BKLV = self.tracer.logits_with_edits(edits or {}, **inputs)
        batch = codes_BKT.shape[0]
        logits_BKLV = logits_BKLV.reshape(batch, self.n_codebooks, *logits_BKLV.shape[1:])
        codes = torch.as_tensor(np.asarray(codes_BKT), dtype=torch.long, device=self.device)
        labels_BKL = delayed_labels(codes).transpose(1, 2)
        mask_BKL = labels_BKL != IGNORE_INDEX
        nll_BKL = torch.nn.functional.cross_entropy(
            logits_BKLV.float().flatten(0, 2),
            labels_BKL.clamp(min=0).flatten(),
            reduction="none",
        ).reshape(labels_BKL.shape)
        nll_B = (nll_BKL * mask_BKL).sum(dim=(1, 2))
        return nll_B.cpu(), mask_BKL.sum(dim=(1, 2)).cpu()

    # -- generation ------------------------------------------------------------------

    @property
    def samples_per_frame(self) -> int:
        return int(np.prod(self.model.config.audio_encoder.upsampling_ratios))

    @property
    def audio_channels(self) -> int:
        return int(self.model.config.decoder.audio_channels)

    def generated_frames(self, max_new_tokens: int) -> int:
        """Complete audio frames ``generate(max_new_tokens=...)`` returns."""
        if max_new_tokens < 2 * self.n_codebooks - 2:
            raise MusicSAEError(
                f"generation max_new_tokens={max_new_tokens}",
                f"MusicGen applies its codebook delay pattern only from "
                f"{2 * self.n_codebooks - 2} new tokens on",
                f"generate at least {2 * self.n_codebooks - 2} tokens",
            )
        return max_new_tokens - self.n_codebooks + 1

    def generate(
        self,
        texts: list[str],
        layers: list[int],
        settings: GenerationSettings,
        policy: str,
        seed: int | None = None,
        edit: GenerationEdit | None = None,
        edit_layers: list[int] | None = None,
        edit_rows: EditRows = "conditional",
    ) -> GeneratedBatch:
        """Generate from ``texts`` and keep the conditional rows of ``layers`` at the
        stored positions of ``policy`` (the teacher-forced layout: position ``p`` reads
        frame ``p - 1 - k`` of codebook ``k``, so ``frame = p - 1``).

        ``edit`` (see ``GenerationEdit``) changes site outputs at every decoder run;
        steering builds on it. Sampling draws from ``seed`` (default ``settings.seed``).
        """
        n_frames = self.generated_frames(settings.max_new_tokens)
        positions = stored_positions(n_frames, self.n_codebooks, self.check_policy(policy))
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(settings.seed if seed is None else seed)
            steps = self.tracer.generate(
                layers,
                settings.max_new_tokens,
                edit=edit,
                edit_layers=edit_layers,
                edit_rows=edit_rows,
                **self.text_inputs(texts),
                do_sample=settings.do_sample,
                guidance_scale=settings.guidance_scale,
                top_k=settings.top_k,
                temperature=settings.temperature,
            )
        # Run r reads position r - 1 (run 0 is the discarded prefill).
        runs = torch.as_tensor(positions + 1)
        return GeneratedBatch(
            audio_BCS=steps.audio_BCS,
            sample_rate=self.sample_rate,
            acts_BRD={
                layer: h_BRD.index_select(1, runs.to(h_BRD.device))
                for layer, h_BRD in steps.hidden.items()
            },
            frames_R=position_frames(positions),
            n_frames=n_frames,
            n_runs=steps.n_runs,
            codes_BKT=undelay(steps.tokens, n_frames).cpu().numpy(),
        )
