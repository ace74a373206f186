"""TopK and BatchTopK SAE training with a sparse decoder and sparse gradients.

dictionary_learning's ``TopKTrainer`` / ``BatchTopKTrainer`` scatter the k active codes
of each token into a dense ``[B, F]`` matrix and let autograd run dense matrix products
for the decoder and for every gradient: six ``B x D x F`` products per step. Only the
encoder's forward product needs all ``F`` latents. Here every other product touches
the active entries alone:

- decode: ``x_hat[b] = sum_k v[b, k] * W_dec[:, i[b, k]] + b_dec`` (``embedding_bag``);
- gradient of each active code: ``g[b] . W_dec[:, i]`` at the active entries only
  (``sampled_addmm`` on the CSR pattern of the codes);
- decoder, encoder and encoder-bias gradients: sums over the entries of each latent
  (the same entries sorted by latent, ``embedding_bag`` again, ``index_add_``);
- decoder-bias gradient through the encoder: the encoder-bias gradient times ``W_enc``
  (the input gradient is only ever summed over tokens).

The auxiliary-k codes (the top ``d/2`` dead latents of each token) are much denser than
the main ones; while they fill more than 1/``DENSE_AUX_RATIO`` of the dead latents they
run as dense products over the dead latents only (still cheaper than dictionary_learning's
three extra products over all latents). Large buffers are reused between steps.

The trainers compute the same loss as dictionary_learning's (reconstruction plus the
auxiliary-k loss over dead latents, normalised the same way), keep the same state
(``num_tokens_since_fired``, the inference threshold, the logging parameters) and apply
the same update: geometric-median ``b_dec`` at step 0, decoder-gradient projection,
gradient-norm clipping at 1, Adam with the same betas and learning-rate schedule, unit
decoder norms. Adam runs as torch's fused kernel where available (same arithmetic,
one pass). ``.ae`` is dictionary_learning's ``AutoEncoderTopK`` / ``BatchTopKSAE``, so
artifacts and checkpoints are interchangeable with that library's trainers.

Data parallelism (``musicsae_kedro.sae.parallel``): set ``trainer.parallel`` to a
``Reducer`` over the processes and give each its slice of every global batch; the
trainer then exchanges the step-0 batch (geometric median), BatchTopK's selection cut,
the fired-latent masks, the threshold statistics, the auxiliary loss's normaliser, the
loss and the gradients, so that every replica takes the step one process would take on
the global batch (up to the order of floating-point sums).

Deliberate differences, all in degenerate cases: an auxiliary loss that is not finite
(a batch whose residuals are all equal) counts as 0 instead of dictionary_learning's
``nan_to_num`` (which turns +inf into the largest float); with ``auxk_alpha == 0`` the
auxiliary loss is skipped (``pre_norm_auxk_loss`` stays -1) for both architectures.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from dictionary_learning.trainers.batch_top_k import BatchTopKSAE
from dictionary_learning.trainers.top_k import AutoEncoderTopK, geometric_median
from dictionary_learning.trainers.trainer import SAETrainer, get_lr_schedule
from torch import nn

from musicsae_kedro.sae.parallel import SINGLE, Reducer

logger = logging.getLogger(__name__)

DEAD_FEATURE_THRESHOLD = 10_000_000
"""Tokens without firing after which a latent counts as dead (dictionary_learning's)."""

_PROJECTION_EPS = 1e-6
"""dictionary_learning's epsilon when normalising decoder rows for the projection."""


@dataclass(frozen=True)
class SparseCodes:
    """The non-zero entries of a ``[B, F]`` code matrix, token-major.

    Within a token the entries are sorted by latent, so ``(crow, cols)`` is a valid CSR
    pattern.
    """

    rows: torch.Tensor
    """``[nnz]`` token of each entry (int64, non-decreasing)."""
    cols: torch.Tensor
    """``[nnz]`` latent of each entry (int64)."""
    vals: torch.Tensor
    """``[nnz]`` code value of each entry."""
    crow: torch.Tensor
    """``[B + 1]`` offsets: token ``b`` owns entries ``crow[b]:crow[b + 1]``."""

    @property
    def tokens(self) -> int:
        return self.crow.numel() - 1

    def positive(self) -> SparseCodes:
        """The entries with a positive value (the others add nothing to any product or
        gradient: their values are 0 and the ReLU passes no gradient there)."""
        keep = self.vals > 0
        if bool(keep.all()):
            return self
        rows = self.rows[keep]
        crow = torch.zeros_like(self.crow)
        torch.cumsum(torch.bincount(rows, minlength=self.tokens), 0, out=crow[1:])
        return SparseCodes(rows=rows, cols=self.cols[keep], vals=self.vals[keep], crow=crow)


def fixed_width_codes(vals_BK: torch.Tensor, cols_BK: torch.Tensor) -> SparseCodes:
    """Codes with the same number of entries per token (per-token top-k)."""
    batch, width = cols_BK.shape
    cols_BK, order_BK = cols_BK.sort(dim=1)
    vals_BK = vals_BK.gather(1, order_BK)
    device = cols_BK.device
    return SparseCodes(
        rows=torch.arange(batch, device=device).repeat_interleave(width),
        cols=cols_BK.reshape(-1),
        vals=vals_BK.reshape(-1),
        crow=torch.arange(0, batch * width + 1, width, device=device),
    )


def _stable_order(keys: torch.Tensor) -> torch.Tensor:
    """``argsort(keys, stable=True)`` on 32-bit keys: radix sort does half the passes of
    int64, which matters most when the sort's threads compete for busy cores."""
    return torch.argsort(keys.to(torch.int32), stable=True)


def entries_to_codes(
    rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, batch: int, latents: int
) -> SparseCodes:
    """Codes from unordered ``(token, latent, value)`` entries."""
    # One sort by (token, latent); 32-bit keys when they fit (half the radix passes).
    key = rows * latents + cols
    order = torch.argsort(key.to(torch.int32) if batch * latents < 2**31 else key)
    crow = torch.zeros(batch + 1, dtype=torch.long, device=rows.device)
    torch.cumsum(torch.bincount(rows, minlength=batch), 0, out=crow[1:])
    return SparseCodes(rows=rows[order], cols=cols[order], vals=vals[order], crow=crow)


def decode_codes(codes: SparseCodes, table_FD: torch.Tensor) -> torch.Tensor:
    """``out[b] = sum over b's entries of value * table_FD[latent]`` -> ``[B, D]``."""
    return F.embedding_bag(
        codes.cols,
        table_FD,
        codes.crow,
        mode="sum",
        per_sample_weights=codes.vals,
        include_last_offset=True,
    )


def entry_dots(codes: SparseCodes, left_BD: torch.Tensor, table_FD: torch.Tensor) -> torch.Tensor:
    """``left_BD[row] . table_FD[col]`` for every entry -> ``[nnz]``.

    The product ``left_BD @ table_FD.T`` sampled at the codes' CSR pattern, without
    forming the dense ``[B, F]`` product.
    """
    with warnings.catch_warnings():
        # "Sparse CSR tensor support is in beta state": sampled_addmm is what we need.
        warnings.simplefilter("ignore", UserWarning)
        pattern = torch.sparse_csr_tensor(
            codes.crow,
            codes.cols,
            torch.zeros_like(codes.vals),
            size=(codes.tokens, table_FD.shape[0]),
            check_invariants=False,
        )
        sampled = torch.sparse.sampled_addmm(pattern, left_BD, table_FD.T, beta=0.0)
    return sampled.values()


def per_latent_sums(
    cols: torch.Tensor,
    latents: int,
    tables: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
) -> list[torch.Tensor]:
    """For each ``(table_XD, row_index, weight)``: ``out[f] = sum weight * table[row]``
    over the entries of latent ``f`` -> ``[F, D]`` (zeros for latents without entries).

    All tables share the entry list ``cols``; it is sorted by latent once.
    """
    order = _stable_order(cols)
    offsets = torch.zeros(latents + 1, dtype=torch.long, device=cols.device)
    torch.cumsum(torch.bincount(cols, minlength=latents), 0, out=offsets[1:])
    return [
        F.embedding_bag(
            rows[order],
            table_XD,
            offsets,
            mode="sum",
            per_sample_weights=weights[order],
            include_last_offset=True,
        )
        for table_XD, rows, weights in tables
    ]


def project_out_parallel(W_FD: torch.Tensor, grad_FD: torch.Tensor) -> None:
    """Remove from each latent's decoder gradient its component along that latent's
    decoder direction, in place (dictionary_learning's
    ``remove_gradient_parallel_to_decoder_directions``, on ``[F, D]`` rows).

    ``g -= (g . u) u`` with ``u = w / (|w| + eps)``, written as ``g -= c w`` with
    ``c = (g . w) / (|w| + eps)^2``: no ``[F, D]`` temporaries.
    """
    norm_F = torch.linalg.vector_norm(W_FD, dim=1) + _PROJECTION_EPS
    dots_F = torch.bmm(grad_FD.unsqueeze(1), W_FD.unsqueeze(2)).view(-1)
    grad_FD.addcmul_(W_FD, (dots_F / norm_F.square()).unsqueeze(1), value=-1.0)


def mean_squared_norm(x_BD: torch.Tensor) -> torch.Tensor:
    """``x.pow(2).sum(-1).mean()`` as one dot product (no ``[B, D]`` temporary)."""
    flat = x_BD.reshape(-1)
    return torch.dot(flat, flat) / x_BD.shape[0]


def _adam(params: Any, lr: float, device: torch.device) -> torch.optim.Adam:
    # The fused kernel updates each tensor in one pass (the default CPU path makes ~10);
    # same algorithm and hyperparameters as dictionary_learning's Adam.
    fused = device.type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), fused=fused)


class _Workspace:
    """Buffers reused from step to step.

    A fresh multi-megabyte CPU tensor costs a page fault per 4 KiB page on first touch
    (glibc serves allocations over 32 MiB with mmap and returns them on free): for the
    ``[B, F]`` pre-activations that is several times the cost of writing them.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, like: torch.Tensor, *shape: int) -> torch.Tensor:
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape != shape or buffer.dtype != like.dtype:
            buffer = torch.empty(shape, dtype=like.dtype, device=like.device)
            self._buffers[name] = buffer
        return buffer


DENSE_AUX_RATIO = 32
"""The auxiliary codes run as dense products over the dead latents (4 products of
``B x D x n_dead``) unless the dead latents outnumber the positive auxiliary codes per
token by more than this: a gather-based product does ~25-40x fewer FLOP/s than a matrix
product on CPU, and the auxiliary codes are far denser (k_aux = d/2 of the dead latents)
than the main ones."""


@dataclass
class _AuxTerm:
    """The auxiliary-k loss of one step and what its gradients need."""

    loss: torch.Tensor
    grad_recon_BD: torch.Tensor
    """d loss / d (auxiliary reconstruction)."""
    codes: SparseCodes | None = None
    """Sparse form: the positive auxiliary codes."""
    dead_idx: torch.Tensor | None = None
    """Dense form: the dead latents, the codes over them and their decoder rows."""
    codes_BN: torch.Tensor | None = None
    W_dec_ND: torch.Tensor | None = None


class SparseTopKTrainer(SAETrainer):
    """TopK SAE trainer (Gao et al. 2024) with sparse decode and gradients.

    Takes dictionary_learning's ``TopKTrainer`` arguments and keeps its attributes;
    ``update(step, x) -> loss`` trains on one batch.
    """

    trainer_name = "SparseTopKTrainer"

    def __init__(
        self,
        steps: int,
        activation_dim: int,
        dict_size: int,
        k: int,
        layer: int | str,
        lm_name: str,
        dict_class: type = AutoEncoderTopK,
        lr: float | None = None,
        auxk_alpha: float = 1 / 32,
        warmup_steps: int = 1000,
        decay_start: int | None = None,
        threshold_beta: float = 0.999,
        threshold_start_step: int = 1000,
        seed: int | None = None,
        device: str | None = None,
        wandb_name: str = "AutoEncoderTopK",
        submodule_name: str | None = None,
    ) -> None:
        super().__init__(seed)
        if layer is None or lm_name is None:
            raise ValueError("layer and lm_name are required (they are recorded in config)")
        if not 1 <= k <= dict_size:
            raise ValueError(f"k={k} must lie in [1, dict_size={dict_size}]")
        self.layer = layer
        self.lm_name = lm_name
        self.submodule_name = submodule_name
        self.wandb_name = wandb_name
        self.steps = steps
        self.decay_start = decay_start
        self.warmup_steps = warmup_steps
        self.k = k
        self.threshold_beta = threshold_beta
        self.threshold_start_step = threshold_start_step

        if seed is not None:
            # Same seeding and construction as dictionary_learning: same initial weights.
            torch.manual_seed(seed)
            torch.cuda.manual_seed_all(seed)
        self.ae = dict_class(activation_dim, dict_size, k)
        # dictionary_learning initialises the encoder as a clone of the transposed
        # decoder, which keeps transposed strides; the gradients built here are
        # row-major, and the fused optimizer wants a parameter's gradient in its layout.
        self.ae.encoder.weight.data = self.ae.encoder.weight.data.contiguous()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.ae.to(self.device)

        self.lr = lr if lr is not None else 2e-4 / (dict_size / 2**14) ** 0.5
        self.auxk_alpha = auxk_alpha
        self.dead_feature_threshold = DEAD_FEATURE_THRESHOLD
        self.top_k_aux = activation_dim // 2  # Gao et al., appendix B.1
        self.num_tokens_since_fired = torch.zeros(dict_size, dtype=torch.long, device=self.device)
        self.logging_parameters = ["effective_l0", "dead_features", "pre_norm_auxk_loss"]
        self.effective_l0 = -1
        self.dead_features = -1
        self.pre_norm_auxk_loss = -1.0

        self.parallel: Reducer = SINGLE
        """The data-parallel processes this trainer exchanges statistics with."""
        self._workspace = _Workspace()
        self._decoder_rows_of: tuple[int, int] | None = None
        self.optimizer = _adam(self.ae.parameters(), self.lr, torch.device(self.device))
        lr_fn = get_lr_schedule(steps, warmup_steps, decay_start=decay_start)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=lr_fn)

    # -- selection rules (overridden by BatchTopK) -----------------------------------

    def select(self, pre_BF: torch.Tensor) -> SparseCodes:
        """The active entries: the k largest pre-activations of each token, through the
        ReLU (applied to the selected entries only; see ``compute_gradients``)."""
        vals_BK, cols_BK = pre_BF.topk(self.k, dim=1, sorted=False)
        return fixed_width_codes(vals_BK.clamp_(min=0), cols_BK)

    def fired_latents(self, codes: SparseCodes) -> torch.Tensor:
        """Latents that count as fired: every selected one (as dictionary_learning)."""
        return codes.cols

    def threshold_sample(self, codes: SparseCodes) -> torch.Tensor:
        """This batch's estimate of the inference threshold: the mean over tokens of the
        smallest positive selected activation (a token with none contributes +inf)."""
        active_BK = codes.vals.view(codes.tokens, self.k).clone()
        active_BK[active_BK <= 0] = float("inf")
        lowest_B = active_BK.min(dim=1).values.to(torch.float32)
        if self.parallel.world_size == 1:
            return lowest_B.mean()
        total = self.parallel.sum_(lowest_B.sum())
        return total / (codes.tokens * self.parallel.world_size)

    # -- one step ----------------------------------------------------------------------

    @torch.no_grad()
    def update_threshold(self, codes: SparseCodes) -> None:
        sample = self.threshold_sample(codes)
        if self.ae.threshold < 0:
            self.ae.threshold.copy_(sample)
        else:
            beta = self.threshold_beta
            self.ae.threshold.copy_((beta * self.ae.threshold) + ((1 - beta) * sample))

    @torch.no_grad()
    def _auxiliary(
        self, e_BD: torch.Tensor, pre_BF: torch.Tensor, W_dec_FD: torch.Tensor
    ) -> _AuxTerm | None:
        """Auxiliary-k loss: the top dead latents of each token reconstruct the residual."""
        dead_F = self.num_tokens_since_fired >= self.dead_feature_threshold
        dead_idx = dead_F.nonzero().squeeze(1)
        n_dead = dead_idx.numel()
        self.dead_features = n_dead
        if n_dead == 0 or self.auxk_alpha <= 0:
            self.pre_norm_auxk_loss = -1.0
            return None
        batch = e_BD.shape[0]
        k_aux = min(self.top_k_aux, n_dead)
        all_dead = n_dead == pre_BF.shape[1]
        dead_pre_BN = pre_BF if all_dead else pre_BF.index_select(1, dead_idx)
        vals_BK, pos_BK = dead_pre_BN.topk(k_aux, dim=1, sorted=False)
        vals_BK.clamp_(min=0)  # the ReLU
        positive = int((vals_BK > 0).sum())  # dead latents are mostly silent
        form: dict[str, Any]
        if n_dead * batch <= DENSE_AUX_RATIO * positive:
            codes_BN = torch.zeros_like(dead_pre_BN).scatter_(1, pos_BK, vals_BK)
            W_dec_ND = W_dec_FD if all_dead else W_dec_FD.index_select(0, dead_idx)
            residual_BD = e_BD - codes_BN @ W_dec_ND
            form = {"dead_idx": dead_idx, "codes_BN": codes_BN, "W_dec_ND": W_dec_ND}
        else:
            codes = fixed_width_codes(vals_BK, pos_BK if all_dead else dead_idx[pos_BK])
            codes = codes.positive()
            residual_BD = e_BD - decode_codes(codes, W_dec_FD)
            form = {"codes": codes}
        l2_aux = mean_squared_norm(residual_BD)
        self.pre_norm_auxk_loss = float(l2_aux)
        # Normalised by the residual's variance, as OpenAI's implementation does.
        denom = self._residual_variance(e_BD)
        loss = self.auxk_alpha * l2_aux / denom
        if not bool(torch.isfinite(loss)):
            return None
        # d loss / d reconstruction = -2 alpha (e - reconstruction) / (B denom).
        grad_recon_BD = residual_BD.mul_(-2.0 * self.auxk_alpha / (batch * float(denom)))
        return _AuxTerm(loss=loss, grad_recon_BD=grad_recon_BD, **form)

    def _residual_variance(self, e_BD: torch.Tensor) -> torch.Tensor:
        """``mean_b |e_b - mean(e)|^2`` over the (global) batch."""
        world = self.parallel.world_size
        if world == 1:
            return mean_squared_norm(e_BD - e_BD.mean(dim=0))
        tokens = e_BD.shape[0] * world
        mean_D = self.parallel.sum_(e_BD.sum(dim=0)).div_(tokens)
        centred = e_BD - mean_D
        return self.parallel.sum_(torch.dot(centred.reshape(-1), centred.reshape(-1))) / tokens

    @staticmethod
    def _add_dense_aux_gradients(
        aux: _AuxTerm,
        xc_BD: torch.Tensor,
        grad_W_dec_FD: torch.Tensor,
        grad_W_enc_FD: torch.Tensor,
        grad_b_enc_F: torch.Tensor,
    ) -> None:
        """The auxiliary loss's gradients through dense products over the dead latents."""
        assert aux.codes_BN is not None and aux.W_dec_ND is not None
        assert aux.dead_idx is not None
        codes_BN, grad_recon_BD = aux.codes_BN, aux.grad_recon_BD
        # Through the ReLU and the selection: only the positive selected codes.
        grad_codes_BN = torch.mm(grad_recon_BD, aux.W_dec_ND.T).mul_(codes_BN > 0)
        grad_W_dec_FD.index_add_(0, aux.dead_idx, torch.mm(codes_BN.T, grad_recon_BD))
        grad_W_enc_FD.index_add_(0, aux.dead_idx, torch.mm(grad_codes_BN.T, xc_BD))
        grad_b_enc_F.index_add_(0, aux.dead_idx, grad_codes_BN.sum(dim=0))

    @torch.no_grad()
    def compute_gradients(self, step: int, x_BD: torch.Tensor) -> float:
        """Run the SAE on ``x_BD``, update the dead-latent counters and the threshold,
        and set ``.grad`` of every parameter; returns the loss.

        The gradients equal those of dictionary_learning's ``loss(x, step).backward()``,
        with the decoder's already projected (its
        ``remove_gradient_parallel_to_decoder_directions``): that is cheaper on the
        ``[F, D]`` rows built here than on the ``[D, F]`` parameter.
        """
        ae, ws = self.ae, self._workspace
        batch, latents, width = x_BD.shape[0], ae.dict_size, ae.activation_dim
        W_enc_FD = ae.encoder.weight.detach()
        b_enc_F, b_dec_D = ae.encoder.bias.detach(), ae.b_dec.detach()
        W_dec_DF = ae.decoder.weight.detach()
        W_dec_FD = self._decoder_rows()

        # The encoder product is the one dense product of the step. The ReLU is applied
        # to the selected entries only: it is monotonic, so the top entries of relu(pre)
        # are those of pre (up to ties among non-positive values, which are 0 either way).
        xc_BD = torch.sub(x_BD, b_dec_D, out=ws.get("xc_BD", x_BD, batch, width))
        pre_BF = ws.get("pre_BF", x_BD, batch, latents)
        torch.addmm(b_enc_F, xc_BD, W_enc_FD.T, out=pre_BF)
        codes = self.select(pre_BF)
        if step > self.threshold_start_step:
            self.update_threshold(codes)
        self.effective_l0 = self.k

        e_BD = decode_codes(codes, W_dec_FD).add_(b_dec_D)
        torch.sub(x_BD, e_BD, out=e_BD)  # x - x_hat, in place
        if self.parallel.world_size == 1:
            self.num_tokens_since_fired += batch
            self.num_tokens_since_fired[self.fired_latents(codes)] = 0
        else:  # a latent fired if it fired in any process's slice
            fired_F = torch.zeros(latents, dtype=torch.int32, device=x_BD.device)
            fired_F[self.fired_latents(codes)] = 1
            self.parallel.max_(fired_F)
            self.num_tokens_since_fired += batch * self.parallel.world_size
            self.num_tokens_since_fired.masked_fill_(fired_F.bool(), 0)
        loss = mean_squared_norm(e_BD)
        aux = self._auxiliary(e_BD, pre_BF, W_dec_FD)

        # d loss / d x_hat; code gradients pass the ReLU only where the code is positive.
        grad_xhat_BD = e_BD.mul_(-2.0 / batch)  # e is not needed any more
        grad_codes = entry_dots(codes, grad_xhat_BD, W_dec_FD) * (codes.vals > 0)
        cols, rows, dec_rows = codes.cols, codes.rows, codes.rows
        code_vals, grad_pre, dec_table_XD = codes.vals, grad_codes, grad_xhat_BD
        if aux is not None:
            loss = loss + aux.loss
        if aux is not None and aux.codes is not None:
            ac = aux.codes
            grad_aux = entry_dots(ac, aux.grad_recon_BD, W_dec_FD) * (ac.vals > 0)
            cols = torch.cat([codes.cols, ac.cols])
            rows = torch.cat([codes.rows, ac.rows])
            dec_rows = torch.cat([codes.rows, ac.rows + batch])
            code_vals = torch.cat([codes.vals, ac.vals])
            grad_pre = torch.cat([grad_codes, grad_aux])
            dec_table_XD = torch.cat([grad_xhat_BD, aux.grad_recon_BD])

        grad_W_dec_FD, grad_W_enc_FD = per_latent_sums(
            cols, latents, [(dec_table_XD, dec_rows, code_vals), (xc_BD, rows, grad_pre)]
        )
        grad_b_enc_F = torch.zeros_like(b_enc_F).index_add_(0, cols, grad_pre)
        if aux is not None and aux.codes_BN is not None:
            self._add_dense_aux_gradients(aux, xc_BD, grad_W_dec_FD, grad_W_enc_FD, grad_b_enc_F)
        project_out_parallel(W_dec_FD, grad_W_dec_FD)
        grad_W_dec_DF = ws.get("grad_W_dec_DF", W_dec_DF, width, latents)
        grads = {
            ae.decoder.weight: grad_W_dec_DF.copy_(grad_W_dec_FD.T),
            ae.encoder.weight: grad_W_enc_FD,
            ae.encoder.bias: grad_b_enc_F,
            # b_dec enters as x_hat = ... + b_dec and as x - b_dec before the encoder;
            # the latter's gradient summed over tokens is grad_b_enc @ W_enc.
            ae.b_dec: grad_xhat_BD.sum(dim=0) - grad_b_enc_F @ W_enc_FD,
        }
        for param, grad in grads.items():
            # A parameter whose layout changed (e.g. replaced by a load) gets its
            # gradient in the same layout: optimizers pair them element by element.
            same_layout = grad.stride() == param.stride()
            param.grad = grad if same_layout else torch.empty_like(param).copy_(grad)
        return float(loss)

    def _decoder_rows(self) -> torch.Tensor:
        """The decoder as ``[F, D]`` rows (for the gathers): the copy made when the
        decoder was last normalised, unless the parameter changed since."""
        W_DF = self.ae.decoder.weight.detach()
        W_FD = self._workspace.get("W_dec_FD", W_DF, W_DF.shape[1], W_DF.shape[0])
        if self._decoder_rows_of != (W_DF.data_ptr(), W_DF._version):
            W_FD.copy_(W_DF.T)
        return W_FD

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Unit-norm decoder columns, ``W /= |column| + eps`` (dictionary_learning's
        ``set_decoder_norm_to_unit_norm``), computed on ``[F, D]`` rows: torch reduces a
        ``[D, F]`` matrix over its leading dimension ~10x slower. The rows are kept for
        the next step's gathers."""
        W_DF = self.ae.decoder.weight.detach()
        W_FD = self._workspace.get("W_dec_FD", W_DF, W_DF.shape[1], W_DF.shape[0])
        W_FD.copy_(W_DF.T)
        norm_F = torch.linalg.vector_norm(W_FD, dim=1).add_(torch.finfo(W_DF.dtype).eps)
        W_FD.div_(norm_F.unsqueeze(1))
        W_DF.div_(norm_F)
        self._decoder_rows_of = (W_DF.data_ptr(), W_DF._version)

    def update(self, step: int, x: torch.Tensor) -> float:
        """One training step on the batch ``x`` ``[B, activation_dim]``; returns the loss."""
        if step == 0:
            median = geometric_median(self.parallel.gather(x))
            self.ae.b_dec.data = median.to(self.ae.b_dec.dtype)
        x = x.to(self.device)
        loss = self.compute_gradients(step, x)
        if self.parallel.world_size > 1:
            self.parallel.average_gradients(self.ae.parameters())
            # Report the global batch's values (each process's are means over its slice).
            values = torch.tensor([loss, self.pre_norm_auxk_loss], dtype=torch.float64)
            loss, self.pre_norm_auxk_loss = (
                self.parallel.sum_(values) / self.parallel.world_size
            ).tolist()
        self.apply_gradients()
        return loss

    def apply_gradients(self) -> None:
        """Dictionary_learning's update from the gradients set by ``compute_gradients``
        (the decoder's already projected): clip, Adam step, schedule, unit-norm decoder.

        Gradients are set directly, not by ``backward()``, so autograd hooks (DDP's) do
        not run: data-parallel training averages ``.grad`` across ranks between the two
        calls."""
        nn.utils.clip_grad_norm_(self.ae.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.scheduler.step()
        self.normalise_decoder()

    @property
    def config(self) -> dict[str, Any]:
        return {
            "trainer_class": self.trainer_name,
            "engine": "sparse",
            "dict_class": type(self.ae).__name__,
            "lr": self.lr,
            "steps": self.steps,
            "auxk_alpha": self.auxk_alpha,
            "warmup_steps": self.warmup_steps,
            "decay_start": self.decay_start,
            "threshold_beta": self.threshold_beta,
            "threshold_start_step": self.threshold_start_step,
            "top_k_aux": self.top_k_aux,
            "seed": self.seed,
            "activation_dim": self.ae.activation_dim,
            "dict_size": self.ae.dict_size,
            "k": int(self.ae.k),
            "device": self.device,
            "layer": self.layer,
            "lm_name": self.lm_name,
            "wandb_name": self.wandb_name,
            "submodule_name": self.submodule_name,
        }


class SparseBatchTopKTrainer(SparseTopKTrainer):
    """BatchTopK SAE trainer (Bussmann et al. 2024) with sparse decode and gradients.

    Keeps the ``k * B`` largest post-ReLU pre-activations of the whole batch, learns the
    inference threshold as dictionary_learning's ``BatchTopKTrainer`` does.
    """

    trainer_name = "SparseBatchTopKTrainer"

    def __init__(
        self,
        *args: Any,
        dict_class: type = BatchTopKSAE,
        wandb_name: str = "BatchTopKSAE",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, dict_class=dict_class, wandb_name=wandb_name, **kwargs)
        self.candidates_per_token = min(2 * self.k, self.ae.dict_size)
        """Entries per token considered at first by the batch selection (see ``select``)."""

    def select(self, pre_BF: torch.Tensor) -> SparseCodes:
        """The ``k * B`` largest pre-activations of the batch, through the ReLU.

        Exact, without a top-k over all ``B * F`` values: each token offers its top
        ``c`` entries as candidates and the batch keeps the top ``k * B`` candidates. A
        token whose every candidate is above the smallest kept value (the cut) may hold
        more entries above it: such tokens offer 4x more candidates (up to all ``F``) and
        the cut is recomputed, until no token is short. Entries outside the candidates
        are then at most the cut, so nothing above it is missed (ties at the cut are
        broken arbitrarily, as in any top-k).
        """
        batch, latents = pre_BF.shape
        world = self.parallel.world_size
        if world > 1:
            return self._select_global(pre_BF, world)
        rows, cols, vals = self._batch_top(pre_BF, self.k * batch)
        return entries_to_codes(rows, cols, vals.clamp_(min=0), batch, latents)  # the ReLU

    def _select_global(self, pre_BF: torch.Tensor, world: int) -> SparseCodes:
        """The entries of this process's slice among the ``k x B`` largest of the global
        batch: every process offers its own top ``k x B`` (a superset of its share), the
        ``k x B``-th largest of all offers is the cut, and each keeps its entries at or
        above it (positive ones: the others are 0 after the ReLU and change nothing)."""
        batch, latents = pre_BF.shape
        n_keep = self.k * batch * world
        rows, cols, vals = self._batch_top(pre_BF, min(n_keep, batch * latents))
        offers = self.parallel.gather(vals)
        cut = offers.topk(min(n_keep, offers.numel()), sorted=False).values.min()
        keep = (vals >= cut) & (vals > 0)
        return entries_to_codes(rows[keep], cols[keep], vals[keep], batch, latents)

    def _batch_top(
        self, pre_BF: torch.Tensor, n_keep: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(rows, cols, values)`` of the ``n_keep`` largest entries of ``pre_BF``."""
        batch, latents = pre_BF.shape
        width = min(max(self.candidates_per_token, -(-n_keep // batch)), latents)
        vals_BC, cols_BC = pre_BF.topk(width, dim=1, sorted=False)
        vals, cols = vals_BC.reshape(-1), cols_BC.reshape(-1)
        rows = torch.arange(batch, device=pre_BF.device).repeat_interleave(width)
        width_B = torch.full((batch,), width, device=pre_BF.device)
        while True:
            top = vals.topk(n_keep, sorted=False)
            lowest_B = torch.full((batch,), float("inf"), dtype=vals.dtype, device=vals.device)
            lowest_B.scatter_reduce_(0, rows, vals, reduce="amin")
            short_B = (lowest_B > top.values.min()) & (width_B < latents)
            if not bool(short_B.any()):
                break
            short = short_B.nonzero().squeeze(1)
            wider = min(latents, 4 * int(width_B[short].max()))
            more_vals, more_cols = pre_BF[short].topk(wider, dim=1, sorted=False)
            keep = ~short_B[rows]
            vals = torch.cat([vals[keep], more_vals.reshape(-1)])
            cols = torch.cat([cols[keep], more_cols.reshape(-1)])
            rows = torch.cat([rows[keep], short.repeat_interleave(wider)])
            width_B[short] = wider
        picked = top.indices
        return rows[picked], cols[picked], top.values

    def fired_latents(self, codes: SparseCodes) -> torch.Tensor:
        """Latents with a positive code somewhere in the batch (as dictionary_learning)."""
        return codes.cols[codes.vals > 0]

    def threshold_sample(self, codes: SparseCodes) -> torch.Tensor:
        """The smallest positive selected activation of the batch (0 if none)."""
        active = codes.vals[codes.vals > 0]
        if self.parallel.world_size == 1:
            if active.numel() == 0:
                return torch.zeros((), dtype=torch.float32, device=codes.vals.device)
            return active.min().to(torch.float32)
        inf = torch.tensor(float("inf"), device=codes.vals.device)
        lowest = self.parallel.min_((active.min() if active.numel() else inf).to(torch.float32))
        return torch.zeros_like(lowest) if bool(torch.isinf(lowest)) else lowest
