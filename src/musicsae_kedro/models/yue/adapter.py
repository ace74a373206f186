"""The YuE stage-1 adapter: stems -> X-Codec tokens -> interleaved stage-1 activations."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.base import FAMILIES, ActivationBatch, ModelAdapter, ModelConfig
from musicsae_kedro.models.generation import (
    EditRows,
    GeneratedBatch,
    GenerationEdit,
    GenerationSettings,
)
from musicsae_kedro.models.yue import layout
from musicsae_kedro.models.yue.codec import YueCodec, load_codec
from musicsae_kedro.models.yue.configs import XCODEC_GLOBAL_OFFSET, YueOptions
from musicsae_kedro.models.yue.generate import generate_steps
from musicsae_kedro.models.yue.loading import load_stage1, load_text_encoder
from musicsae_kedro.models.yue.tokens import (
    POSITIONS_POLICIES,
    ClipSequence,
    audio_offsets,
    clip_sequence,
    offset_frames,
    pad_right,
)
from musicsae_kedro.models.yue.tracing import SiteEdit, YueTracer

WINDOW_LEAD = 2
"""Positions of ``<SOA> <xcodec>`` before ``v0`` in the audio-segment window edits see."""
HEAD_ROWS = 512
"""Positions per language-model-head call (83968 logits per position)."""


@FAMILIES.register("yue")
class YueAdapter(ModelAdapter):
    """YuE stage 1 (``m-a-p/YuE-s1-7B-*``, a local copy, or ``debug``).

    Codes are ``[B, 2, T]``: row 0 the vocal stem's, row 1 the instrumental stem's
    X-Codec codebook-0 codes (50 Hz). The teacher-forced pass feeds YuE's own prompt
    (genres from the clip's text, optional lyrics) and the interleaved audio tokens,
    and stores the rows of the positions the policy names (default: positions whose
    input token is instrumental). See ``models/yue/tokens.py`` for the layout.
    """

    family = "yue"
    positions_policies = POSITIONS_POLICIES

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.options = YueOptions.from_dict(config.options, f"models ({config.spec}).options")
        self.model = load_stage1(config, self.options)
        self.tracer = YueTracer(self.model)
        self.codec: YueCodec = load_codec(self.options.codec, config.seed, config.device)
        self.encode_text, self.tokenizer_source = load_text_encoder(config, self.options)

    @classmethod
    def layer_count(cls, config: ModelConfig) -> int:
        return layout.layer_count(config)

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def d_model(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def max_positions(self) -> int:
        return int(self.model.config.max_position_embeddings)

    # -- codec tokens ---------------------------------------------------------------

    def encode_stems(self, vocals_BS: np.ndarray, instrumental_BS: np.ndarray) -> np.ndarray:
        """Vocal and instrumental stems of the same clips (mono, 16 kHz) -> ``codes_B2T``."""
        vocals_BS, instrumental_BS = np.asarray(vocals_BS), np.asarray(instrumental_BS)
        if vocals_BS.shape != instrumental_BS.shape or vocals_BS.ndim != 2:
            raise ValueError(
                f"stems must be [B, S] of equal shape, got {vocals_BS.shape} and "
                f"{instrumental_BS.shape}"
            )
        return np.stack(
            [self.codec.encode(vocals_BS), self.codec.encode(instrumental_BS)], axis=1
        ).astype(np.int32)

    def encode_audio(self, audio_BS: np.ndarray) -> np.ndarray:
        """Mix clips -> ``codes_B2T``; only with ``options.stems: mix_as_instrumental``
        (the mix as the instrumental stem beside a silent vocal stem)."""
        if self.options.stems != "mix_as_instrumental":
            raise MusicSAEError(
                f"model {self.spec} (family yue)",
                "YuE reads separate vocal and instrumental stems; the clips are a mix",
                "preprocess with stems (vocals + instrumental) and call encode_stems, or set "
                "`options.stems: mix_as_instrumental` to encode the mix as the instrumental "
                "stem beside silent vocals (recorded in the provenance)",
            )
        audio_BS = np.asarray(audio_BS, dtype=np.float32)
        return self.encode_stems(np.zeros_like(audio_BS), audio_BS)

    # -- stage-1 inputs -------------------------------------------------------------

    def rows_per_clip(self, n_frames: int, policy: str) -> int:
        return len(audio_offsets(n_frames, self.check_policy(policy)))

    def clip_sequences(
        self,
        codes_BKT: np.ndarray,
        texts: Sequence[str],
        lyrics: Sequence[str | None] | None = None,
    ) -> list[ClipSequence]:
        """Each clip's stage-1 input (texts are the genre tags of the prompt)."""
        codes_BKT = np.asarray(codes_BKT)
        if codes_BKT.ndim != 3 or codes_BKT.shape[1] != 2:
            raise ValueError(
                f"YuE codes must be [B, 2 (vocal, instrumental), T], got {codes_BKT.shape}"
            )
        lyrics = list(lyrics) if lyrics is not None else [None] * len(codes_BKT)
        sequences = [
            clip_sequence(self.encode_text, codes_2T, text, words)
            for codes_2T, text, words in zip(codes_BKT, texts, lyrics, strict=True)
        ]
        longest = max(len(s.ids_L) for s in sequences)
        if longest > self.max_positions:
            raise MusicSAEError(
                f"model {self.spec}",
                f"a clip needs {longest} positions, more than YuE's context of "
                f"{self.max_positions}",
                "use shorter clips (2 tokens per 20 ms frame plus the prompt)",
            )
        return sequences

    def layer_activations(
        self,
        codes_BKT: np.ndarray,
        texts: list[str],
        layers: list[int],
        policy: str,
        lyrics: Sequence[str | None] | None = None,
    ) -> ActivationBatch:
        offsets_R = audio_offsets(np.asarray(codes_BKT).shape[-1], self.check_policy(policy))
        sequences = self.clip_sequences(codes_BKT, texts, lyrics)
        ids_BL = torch.as_tensor(pad_right([s.ids_L for s in sequences]))
        hidden = self.tracer.layer_outputs(layers, ids_BL)
        starts_B = torch.as_tensor([s.audio_start for s in sequences])
        index_BR = (starts_B[:, None] + torch.as_tensor(offsets_R)[None, :]).to(
            next(iter(hidden.values())).device
        )
        return ActivationBatch(
            acts_BRD={
                layer: torch.gather(h_BLD, 1, index_BR[..., None].expand(-1, -1, h_BLD.shape[-1]))
                for layer, h_BLD in hidden.items()
            },
            frames_R=offset_frames(offsets_R),
        )

    # -- teacher-forced cross-entropy and edits at sites --------------------------------
    #
    # Prompts differ in length between clips (the genre text), so the audio of a batch
    # starts at a different position in each sequence. Edits therefore see the
    # *audio-segment window* of every clip, aligned across the batch:
    # ``<SOA> <xcodec> v0 i0 ... v(T-1) i(T-1) <EOA>`` (window position 0 is <SOA>,
    # ``WINDOW_LEAD + 2t`` is ``v_t``). The text prompt is never edited, as MusicGen's
    # decoder-layer edits never touch its text encoder.

    def window_length(self, n_frames: int) -> int:
        """Positions of the audio-segment window of a clip of ``n_frames`` frames."""
        return WINDOW_LEAD + 2 * int(n_frames) + 1

    def site_positions(self, n_frames: int, policy: str) -> np.ndarray:
        """Window positions of the stored rows of ``policy`` (where CE-recovered splices
        and position-restricted edits act): ``WINDOW_LEAD + audio_offsets``."""
        return WINDOW_LEAD + audio_offsets(n_frames, self.check_policy(policy))

    @property
    def default_ce_labels(self) -> str:
        """Which audio tokens the CE counts by default: both stems (``all_audio``), or
        only the instrumental one when the vocal stem is the silence that
        ``mix_as_instrumental`` puts there (it carries no content, like delay padding)."""
        return "all_audio" if self.options.stems == "separate" else "instrumental"

    def codebook_nll(
        self,
        codes_BKT: np.ndarray,
        texts: list[str],
        edits: dict[int, SiteEdit] | None = None,
        lyrics: Sequence[str | None] | None = None,
        labels: str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced cross-entropy per clip: ``(nll_sum_B, tokens_B)``.

        Labels are next tokens; only audio tokens of the stems ``labels`` names count
        (a positions-policy name: ``all_audio``, ``instrumental``, ``vocal``; default
        ``default_ce_labels``), each predicted from the position before it. Prompt text,
        ``<SOA>``, ``<xcodec>`` and ``<EOA>`` labels never count. The CE is over YuE's whole
        vocabulary, as it trains. ``edits`` act on the audio-segment window (see above).
        Sum over clips and divide for a corpus-mean CE.
        """
        codes_BKT = np.asarray(codes_BKT)
        n_frames = codes_BKT.shape[-1]
        label_offsets_R = audio_offsets(
            n_frames, self.check_policy(labels or self.default_ce_labels)
        )
        sequences = self.clip_sequences(codes_BKT, texts, lyrics)
        ids_BL = torch.as_tensor(pad_right([s.ids_L for s in sequences]))
        starts_B = torch.as_tensor([s.audio_start for s in sequences])
        window = self.window_length(n_frames)
        wrapped = {
            layer: windowed_edit(edit, starts_B - WINDOW_LEAD, window)
            for layer, edit in (edits or {}).items()
        }
        hidden_BLD = self.tracer.final_hidden_with_edits(wrapped, ids_BL)
        label_pos_BR = starts_B[:, None] + torch.as_tensor(label_offsets_R)[None, :]
        labels_BR = torch.gather(ids_BL, 1, label_pos_BR)
        rows_BRD = torch.gather(
            hidden_BLD,
            1,
            (label_pos_BR - 1)
            .to(hidden_BLD.device)[..., None]
            .expand(-1, -1, hidden_BLD.shape[-1]),
        )
        nll_BR = self._head_nll(rows_BRD.flatten(0, 1), labels_BR.flatten()).reshape(
            labels_BR.shape
        )
        tokens_B = torch.full((len(sequences),), labels_BR.shape[1], dtype=torch.long)
        return nll_BR.sum(dim=1), tokens_B

    def _head_nll(self, hidden_ND: torch.Tensor, labels_N: torch.Tensor) -> torch.Tensor:
        """Per-row cross-entropy of the language-model head, in chunks of rows."""
        head = self.model.get_output_embeddings()
        hidden_ND = hidden_ND.to(head.weight.device)
        labels_N = labels_N.to(head.weight.device)
        parts = []
        with torch.no_grad():
            for start in range(0, len(hidden_ND), HEAD_ROWS):
                logits_NV = head(hidden_ND[start : start + HEAD_ROWS]).float()
                parts.append(
                    torch.nn.functional.cross_entropy(
                        logits_NV, labels_N[start : start + HEAD_ROWS], reduction="none"
                    )
                )
        return torch.cat(parts).cpu()

    # -- generation with per-step edits -------------------------------------------------

    @property
    def samples_per_frame(self) -> int:
        """Audio samples per codec frame (X-Codec: 320 at 16 kHz)."""
        return self.sample_rate // self.codec.frame_rate

    @property
    def audio_channels(self) -> int:
        """Channels of the generated audio: one (the two stems mixed)."""
        return 1

    def generated_frames(self, max_new_tokens: int) -> int:
        """Frames ``max_new_tokens`` audio tokens make (two per frame: vocal, instrumental)."""
        if max_new_tokens < 2:
            raise MusicSAEError(
                f"generation max_new_tokens={max_new_tokens} (model {self.spec})",
                "YuE generates a vocal and an instrumental token per frame",
                "generate at least 2 tokens (an even number: frames x 2)",
            )
        return max_new_tokens // 2

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
        lyrics: Sequence[str | None] | None = None,
    ) -> GeneratedBatch:
        """Generate ``max_new_tokens // 2`` frames of both stems after YuE's prompt for
        ``texts`` (genre tags, optional ``lyrics``) and keep the conditional rows of
        ``layers`` at the stored positions of ``policy``: the same rows a teacher-forced
        ``layer_activations`` over the generated codes stores (see ``generate.py``).

        ``edit`` (a ``GenerationEdit``) acts on ``edit_layers`` (default: ``layers``) at
        the runs whose input token is a stored position of ``policy``; it sees the
        token's audio-segment window position (``site_positions``). Under guidance the
        unconditional model call is edited only with ``edit_rows: all``. ``codes_BKT`` is
        ``[B, 2 (vocal, instrumental), T]``; ``audio_BCS`` is the codec's decoding of
        both stems, mixed (``[B, 1, T * 320]`` at 16 kHz).
        """
        n_frames = self.generated_frames(settings.max_new_tokens)
        policy = self.check_policy(policy)
        empty_2T = np.zeros((2, 0), dtype=np.int64)
        words = list(lyrics) if lyrics is not None else [None] * len(texts)
        prefixes = [
            (s := clip_sequence(self.encode_text, empty_2T, text, w)).ids_L[: s.audio_start]
            for text, w in zip(texts, words, strict=True)
        ]
        longest = max(len(p) for p in prefixes) + 2 * n_frames + 1
        if longest > self.max_positions:
            raise MusicSAEError(
                f"generation max_new_tokens={settings.max_new_tokens} (model {self.spec})",
                f"prompt and audio need {longest} positions, more than YuE's context of "
                f"{self.max_positions}",
                "generate fewer frames or shorten the prompt",
            )
        sites = self.site_positions(n_frames, policy)
        steps = generate_steps(
            self.model,
            prefixes,
            n_frames,
            settings,
            sites,
            layers,
            settings.seed if seed is None else seed,
            edit=edit,
            edit_layers=edit_layers,
            edit_rows=edit_rows,
        )
        codes_BKT = steps.codes_B2T.numpy().astype(np.int64)
        vocal_BS = self.codec.decode(codes_BKT[:, 0])
        instrumental_BS = self.codec.decode(codes_BKT[:, 1])
        runs = torch.as_tensor(sites - 1)  # run r reads window position r + 1
        return GeneratedBatch(
            audio_BCS=(vocal_BS + instrumental_BS).astype(np.float32)[:, None, :],
            sample_rate=self.sample_rate,
            acts_BRD={
                layer: h_BRD.index_select(1, runs.to(h_BRD.device))
                for layer, h_BRD in steps.hidden.items()
            },
            frames_R=offset_frames(audio_offsets(n_frames, policy)),
            n_frames=n_frames,
            n_runs=len(steps.window_positions_R),
            codes_BKT=codes_BKT,
        )

    def provenance(self, policy: str) -> dict[str, str | int | float]:
        return {
            **super().provenance(policy),
            "codec": self.codec.describe(),
            "codec_frame_rate": self.codec.frame_rate,
            "token_layout": (
                f"<SOA> <xcodec> then X-Codec codebook 0 (+{XCODEC_GLOBAL_OFFSET}) of the vocal "
                "and instrumental stems interleaved per frame, vocal first, <EOA>"
            ),
            "prompt_format": "YuE infer.py: instruction + [Genre] {text} + lyrics, "
            "[start_of_segment] + segment",
            "stems": (
                "vocals + instrumental (separate stems)"
                if self.options.stems == "separate"
                else "mix as instrumental, silent vocals (mix_as_instrumental)"
            ),
            "tokenizer": self.tokenizer_source,
        }


def windowed_edit(edit: SiteEdit, window_starts_B: torch.Tensor, length: int) -> SiteEdit:
    """A whole-sequence edit that shows ``edit`` each clip's audio-segment window
    (``length`` positions from ``window_starts_B``) and writes its result back."""

    def full(hidden_in_BLD: torch.Tensor, hidden_out_BLD: torch.Tensor) -> torch.Tensor:
        positions_BW = window_starts_B[:, None] + torch.arange(length)[None, :]
        index_BWD = positions_BW.to(hidden_out_BLD.device)[..., None].expand(
            -1, -1, hidden_out_BLD.shape[-1]
        )
        window_out_BWD = torch.gather(hidden_out_BLD, 1, index_BWD)
        edited_BWD = edit(torch.gather(hidden_in_BLD, 1, index_BWD), window_out_BWD)
        if edited_BWD.shape != window_out_BWD.shape:
            raise ValueError(
                f"an edit returned shape {tuple(edited_BWD.shape)} for a window of "
                f"{tuple(window_out_BWD.shape)}"
            )
        return hidden_out_BLD.scatter(1, index_BWD, edited_BWD.to(hidden_out_BLD.dtype))

    return full
