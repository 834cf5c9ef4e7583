"""Attention quantizer of CODA (Liu et al. 2025, "CODA: Repurposing Continuous VAEs for Discrete Tokenization").

Per token ``f`` and codebook ``E`` ``(K, D)``:

* ``q = RMSNorm(W_q f)`` ``(N, hidden)``, ``k = RMSNorm(W_k E)`` ``(K, hidden)``, ``V = W_v E`` ``(K, C)``;
* ``scores = softmax(q k^T / sqrt(hidden))`` over the whole codebook, ``index = argmax``;
* output in the IBQ straight-through form (Shi et al. 2024, "Taming Scalable Visual Tokenizer ...
  Index Backpropagation Quantization"): ``(onehot - sg[soft] + soft) V``, i.e. the value of the hard
  code ``V[index]`` with the gradient of the soft mixture ``soft V``.

Losses (IBQ quantization loss plus the MAGVIT entropy penalty, as in the authors' code):

* ``losses["quant"] = mse(soft V, f) + mse(sg[V[index]], f) + beta * mse(V[index], sg[f])``;
* ``losses["entropy"] = entropy_weight * (mean_n H(p_n) - H(mean_n p_n))`` with
  ``p_n = softmax(q_n k^T / sqrt(hidden) / entropy_temperature)``.

Eval never materialises the ``(N, K)`` score matrix: tokens are processed in chunks of ``chunk_size`` rows
(``argmax`` of the logits equals ``argmax`` of the softmax), so memory is ``O(chunk_size * K)``. With the
automatic ``chunk_size``, on CPUs with native bf16 products and codebooks of at least 16,384 codes, the
search is screened in bf16 and then resolved exactly (:mod:`.attention_screen`; the exact argmax, fewer
bytes per score).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from ..distributed import all_reduce_, broadcast_
from .attention_fused import attention_argmax, fused_soft_assign
from .attention_screen import ScreenKeys, screen_supported, screened_argmax
from .base import INIT_RESTART_ROUNDS, BaseQuantizer, autocast_off, register_quantizer
from .kmeans import kmeans, sample_rows
from .layout import from_tokens, straight_through, to_tokens
from .output import QuantizerOutput
from .stats import UsageTracker

ATTENTION_INITS = ("aligned", "independent", "nearest", "data")

# Elements of one (tokens, K) score block in eval when chunk_size is automatic (4 MiB of float32).
ATTENTION_CHUNK_ELEMENTS = 2**20
# Default fused_threshold: calls with at least this many (token, code) scores train through the fused
# kernel (a 16 MiB float32 score matrix; below it the reference path is as fast).
FUSED_TRAIN_ELEMENTS = 2**22


def entropy_terms(logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Summable pieces of the MAGVIT entropy penalty for ``(n, K)`` logits.

    Returns ``(sum_n H(p_n), sum_n p_n)`` (a scalar and a ``(K,)`` vector) with
    ``p_n = softmax(logits_n / temperature)``; sums (not means) so that chunks can be added up.
    """
    logp = F.log_softmax(logits.float() / temperature, dim=-1)  # (n, K)
    p = logp.exp()
    return -(p * logp).sum(), p.sum(dim=0)


def entropy_penalty(sample_entropy_sum: torch.Tensor, prob_sum: torch.Tensor, n: int) -> torch.Tensor:
    """``mean_n H(p_n) - H(mean_n p_n)`` from the sums of :func:`entropy_terms` over ``n`` tokens."""
    avg = prob_sum / max(n, 1)  # (K,)
    # clamp inside the log only: codes whose mean probability underflows to 0 add 0 (finite gradient)
    codebook_entropy = -(avg * avg.clamp_min(1e-30).log()).sum()
    return sample_entropy_sum / max(n, 1) - codebook_entropy


def ibq_quant_loss(
    soft_mse: torch.Tensor, commit_mse: torch.Tensor, codebook_mse: torch.Tensor, beta: float
) -> torch.Tensor:
    """IBQ quantization loss ``mse(soft V, f) + mse(sg[V[i]], f) + beta * mse(V[i], sg[f])`` from its terms."""
    return soft_mse + commit_mse + beta * codebook_mse


def _check_init_options(init: str, init_sharpness: float, init_kmeans_iters: int, init_min_usage: float) -> None:
    """``ValueError`` for an unknown ``init`` or an initialisation option it does not take."""
    if init not in ATTENTION_INITS:
        raise ValueError(f"init must be one of {ATTENTION_INITS}; got {init!r}")
    if init_sharpness <= 0:
        raise ValueError(f"init_sharpness must be > 0; got {init_sharpness}")
    if init_kmeans_iters < 0:
        raise ValueError(f"init_kmeans_iters must be >= 0 (0 = sampled values); got {init_kmeans_iters}")
    if init_kmeans_iters and init != "data":
        raise ValueError(f"init_kmeans_iters refines a data initialisation: it needs init='data'; got init={init!r}")
    if not 0.0 <= init_min_usage < 1.0:
        raise ValueError(f"init_min_usage is a fraction of the mean code usage in [0, 1); got {init_min_usage}")
    if init_min_usage and init != "data":
        raise ValueError(f"init_min_usage restarts codes of a data initialisation: it needs init='data'; got init={init!r}")


@register_quantizer("attention")
class AttentionQuantizer(BaseQuantizer):
    """CODA's attention-based quantizer: codes are chosen by softmax attention of features over the codebook.

    Args:
        dim: latent channels ``C``.
        codebook_size: number of codes ``K``.
        codebook_dim: width ``D`` of the stored codes (``None``: ``dim``).
        hidden_dim: width of the query/key space (``None``: ``codebook_dim``). With RMS-normalised ``q``
            and ``k`` the logits ``q.k / sqrt(hidden)`` start within ``+-sqrt(hidden)``; a softmax over ``K``
            codes can only concentrate when that exceeds ``ln K``, so with few latent channels and a large
            codebook pass ``hidden_dim >= ln(K)^2`` (measured on a 4-channel VAE with 4,096 codes:
            hidden 4 -> 128 took a 200-step run from 17.60 to 17.81 dB PSNR, FD-EffNet 134.5 -> 119.6;
            BENCHMARKS.md). It costs ``hidden / codebook_dim`` times the search FLOPs.
        beta: weight of the codebook term ``mse(V[index], sg[f])`` inside ``losses["quant"]`` (paper: 0.05).
        entropy_weight: weight of ``losses["entropy"]`` (paper: 0.05; 0 disables it).
        entropy_temperature: temperature of the entropy penalty's code distribution (paper: 0.01).
        chunk_size: tokens per chunk of the eval search (memory ``chunk_size * K`` floats per block);
            ``None``: automatic (the bf16-screened search where it applies, see the module docstring, else
            ``ATTENTION_CHUNK_ELEMENTS / K`` tokens, at least 1); ``0``: all at once.
        init_std: codebook initialisation ``N(0, init_std^2)``.
        eval_losses: compute ``losses`` in eval mode too (chunked, detached); ``False`` returns no losses in
            eval (faster encoding).
        init: how the codebook and the projections start (the choice of code before any training):

            * ``"aligned"`` (default): codebook ``N(0, init_std^2)``, independent ``nn.Linear`` query and value
              projections and the key projection set to ``k = W_q (W_v e)`` (the query of each code's value),
              so the argmax already picks a code whose value points nearly along the feature. With fully
              independent initialisations the untrained choice is unrelated to the input and a multi-scale
              residual stack *amplifies* the residual level after level (error of tens of times the latent
              variance over 10 levels);
            * ``"independent"``: plain ``nn.Linear`` initialisations of all three projections;
            * ``"nearest"``: the attention argmax starts as EXACT nearest-neighbour search over values
              ``v ~ N(0, init_std^2)``, so an untrained attention quantizer quantizes as well as an untrained
              VQ with the same codebook. Uses ``argmin |f - v|^2 = argmax (2 f.v - |v|^2)``: the code row
              stores ``[v, |v|^2, s]`` with ``s`` padding every key to one norm ``R`` (RMSNorm then rescales
              all keys alike), ``k = [2v, -|v|^2, s]``, ``q = [f, 1, 0]`` (a positive per-query scale does not
              change the argmax), ``V = v``. Needs ``codebook_dim >= dim + 2`` and ``hidden_dim >= dim + 2``
              (their defaults become ``dim + 2``). The RMSNorm gains start at ``sqrt(init_sharpness * R /
              sqrt(hidden))`` so that the training softmax is ``~ exp(-init_sharpness |f - v|^2 /
              sqrt(1 + |f|^2))``, concentrated on the nearest codes rather than spread over the codebook.
            * ``"data"``: ``"nearest"``, then the first TRAINING forward replaces the values by features
              sampled from its batch (every level's input when the quantizer sits in a residual stack), so
              every code starts on the data: k-means-style data-dependent initialisation, as VQ libraries
              do; not part of the CODA paper. The persistent buffer ``data_initialized`` records that it
              happened (a resumed or reloaded model is not re-initialised); under ``torch.distributed`` the
              sampled values are broadcast from rank 0.

            The ``"nearest"`` / ``"data"`` layout is sensitive to per-coordinate optimiser steps on the
            codebook: each key's norm (hence every logit of that code) depends on the code row's
            ``|v|^2`` and pad entries, so Adam at 1e-3 takes it apart within a few updates (on the
            reproduction's photo latents, ``benchmarks/bench_attention_codebook_lr.py``: eval utilization
            100% -> 25%, error 0.0013 -> 0.0031 in 100 quantizer-only steps; 1e-5 keeps it). Train it at a
            low rate (the training option ``quantizer_learning_rate``).
        init_sharpness: ``init="nearest"`` / ``"data"`` only: the softmax sharpness at ``f = 0`` (see above).
        init_kmeans_iters: ``init="data"`` only: Lloyd iterations of k-means (:func:`~.kmeans.kmeans`) that
            refine the sampled values into centroids of the initialisation features (``0``: the samples
            themselves): a lower quantization error from the first step (measured on the reproduction's
            photo latents: ``benchmarks/bench_attention_init.py``, BENCHMARKS.md).
        init_min_usage: ``init="data"`` only: after the data initialisation, codes that the initialisation
            features use fewer than ``init_min_usage * N / K`` times (``N`` features, so a fraction of the
            mean usage) restart on features drawn at random, for up to :data:`~.base.INIT_RESTART_ROUNDS`
            rounds (dead-code restarts, as VQ trainers do, applied once before training). In a residual stack
            the counts come from the stack's own encoding. Rarely used codes are the ones new images
            leave unused: held-out utilization with and without restarts is measured by
            ``benchmarks/bench_attention_init.py`` (BENCHMARKS.md). ``0``: no restarts.
        rms_norm_eps: epsilon of the query and key RMSNorms (``None``: ``torch.nn.RMSNorm``'s default, the
            machine epsilon of the dtype). The authors' released CODA models use ``1e-5``.
        train_chunk_size: reference training path only (see ``fused_threshold``). ``0`` (default): training
            holds the full ``(N, K)`` soft assignment for backward; ``> 0``: training processes chunks of this
            many tokens under activation checkpointing (the ``(chunk, K)`` scores are recomputed in backward),
            trading compute for memory. Same values.
        fused_threshold: a call with ``N * K >= fused_threshold`` (``N`` tokens, ``K`` codes) trains, and
            computes its eval losses, through the fused kernel of :mod:`.attention_fused`: tiles over tokens
            and codes with an online softmax, only per-token statistics kept, scores recomputed in
            backward; memory independent of ``N * K``, same values and gradients as the reference path up
            to float rounding. ``0``: always; ``None``: never (the reference path).

    Training needs the soft assignment (it is what the gradient flows through).
    Eval output equals :meth:`indices_to_codes` bit for bit, and eval indices equal the argmax of the full
    ``(N, K)`` logits (the per-row dot products do not depend on the chunking).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int = 4096,
        codebook_dim: int | None = None,
        hidden_dim: int | None = None,
        beta: float = 0.05,
        entropy_weight: float = 0.05,
        entropy_temperature: float = 0.01,
        chunk_size: int | None = None,
        init_std: float = 1.0,
        eval_losses: bool = True,
        init: str = "aligned",
        init_sharpness: float = 10.0,
        train_chunk_size: int = 0,
        init_kmeans_iters: int = 0,
        init_min_usage: float = 0.0,
        rms_norm_eps: float | None = None,
        fused_threshold: int | None = FUSED_TRAIN_ELEMENTS,
    ):
        super().__init__()
        if dim < 1 or codebook_size < 1:
            raise ValueError(f"dim and codebook_size must be >= 1; got dim={dim}, codebook_size={codebook_size}")
        if codebook_dim is not None and codebook_dim < 1:
            raise ValueError(f"codebook_dim must be >= 1; got {codebook_dim}")
        if hidden_dim is not None and hidden_dim < 1:
            raise ValueError(f"hidden_dim must be >= 1; got {hidden_dim}")
        if entropy_temperature <= 0:
            raise ValueError(f"entropy_temperature must be > 0; got {entropy_temperature}")
        if train_chunk_size < 0:
            raise ValueError(f"train_chunk_size must be >= 0 (0 = no chunking); got {train_chunk_size}")
        if fused_threshold is not None and fused_threshold < 0:
            raise ValueError(f"fused_threshold must be >= 0 (0 = always fused) or None (never); got {fused_threshold}")
        if chunk_size is not None and chunk_size < 0:
            raise ValueError(f"chunk_size must be >= 0 (0 = all tokens at once); got {chunk_size}")
        _check_init_options(init, init_sharpness, init_kmeans_iters, init_min_usage)
        if rms_norm_eps is not None and not rms_norm_eps > 0:
            raise ValueError(f"rms_norm_eps must be > 0 (None: torch's default); got {rms_norm_eps}")
        if init in ("nearest", "data"):
            codebook_dim = dim + 2 if codebook_dim is None else codebook_dim
            for name, width in (("codebook_dim", codebook_dim), ("hidden_dim", hidden_dim)):
                if width is not None and width < dim + 2:
                    raise ValueError(f"init={init!r} needs {name} >= dim + 2 = {dim + 2}; got {name}={width}")
        self.dim = int(dim)
        self.codebook_size = int(codebook_size)
        self.num_levels = 1
        self.codebook_dim = int(codebook_dim) if codebook_dim is not None else self.dim
        self.hidden_dim = int(hidden_dim) if hidden_dim is not None else self.codebook_dim
        self.beta = float(beta)
        self.entropy_weight = float(entropy_weight)
        self.entropy_temperature = float(entropy_temperature)
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.eval_losses = bool(eval_losses)
        self.train_chunk_size = int(train_chunk_size)
        self.fused_threshold = None if fused_threshold is None else int(fused_threshold)
        self.scale = 1.0 / math.sqrt(self.hidden_dim)

        self.embedding = nn.Parameter(torch.randn(self.codebook_size, self.codebook_dim) * init_std)  # (K, D)
        self.q_proj = nn.Linear(self.dim, self.hidden_dim)  # features -> queries
        self.k_proj = nn.Linear(self.codebook_dim, self.hidden_dim)  # codes -> keys
        self.v_proj = nn.Linear(self.codebook_dim, self.dim)  # codes -> values (latent space)
        self.q_norm = nn.RMSNorm(self.hidden_dim, eps=rms_norm_eps)  # weight only, no bias (as the authors)
        self.k_norm = nn.RMSNorm(self.hidden_dim, eps=rms_norm_eps)
        self.init = init
        self.init_sharpness = float(init_sharpness)
        self.init_kmeans_iters = int(init_kmeans_iters)
        self.init_min_usage = float(init_min_usage)
        if init == "aligned":
            with torch.no_grad():  # k_proj(e) == q_proj(v_proj(e)) at initialisation
                self.k_proj.weight.copy_(self.q_proj.weight @ self.v_proj.weight)
                self.k_proj.bias.copy_(self.q_proj.weight @ self.v_proj.bias + self.q_proj.bias)
        elif init in ("nearest", "data"):
            self.nearest_init(torch.randn(self.codebook_size, self.dim) * init_std)
        if init == "data":  # (,) bool: the values have been sampled from training data
            self.register_buffer("data_initialized", torch.tensor(False))
        self.usage = UsageTracker(self.codebook_size)

    @torch.no_grad()
    def nearest_init(self, values: torch.Tensor) -> None:
        """Set the codebook and projections so that the argmax is nearest-neighbour search over ``values``.

        ``values``: ``(K, C)`` code values in latent space (``init="nearest"`` uses ``N(0, init_std^2)``;
        a data-dependent initialisation passes sampled features). Layout in the class docstring.
        """
        c = self.dim
        if values.shape != (self.codebook_size, c):
            raise ValueError(f"values must have shape ({self.codebook_size}, {c}); got {tuple(values.shape)}")
        if self.codebook_dim < c + 2 or self.hidden_dim < c + 2:
            raise ValueError(f"nearest_init needs codebook_dim and hidden_dim >= dim + 2 = {c + 2}; got "
                             f"codebook_dim={self.codebook_dim}, hidden_dim={self.hidden_dim}")
        if self.embedding.is_meta:  # built without storage (from_pretrained): the checkpoint holds the weights
            return
        v = values.detach().to(self.embedding.device, torch.float32)  # (K, C)
        sq = v.pow(2).sum(-1)  # (K,) |v|^2
        key_sq = 4 * sq + sq.pow(2)  # |[2v, -|v|^2]|^2
        radius_sq = float(key_sq.max()) * (1 + 1e-3) + 1e-6  # R^2 (the margin keeps every pad s > 0)
        self.embedding.zero_()
        self.embedding[:, :c] = v  # code row: [v, |v|^2, s, 0...]
        self.embedding[:, c] = sq
        self.embedding[:, c + 1] = (radius_sq - key_sq).sqrt()
        eye = torch.eye(c, device=v.device)
        for layer in (self.q_proj, self.k_proj, self.v_proj):
            layer.weight.zero_()
            layer.bias.zero_()
        self.v_proj.weight[:, :c] = eye  # V = v
        self.k_proj.weight[:c, :c] = 2 * eye  # k = [2v, -|v|^2, s, 0...]: one norm R for every code
        self.k_proj.weight[c, c] = -1.0
        self.k_proj.weight[c + 1, c + 1] = 1.0
        self.q_proj.weight[:c, :c] = eye  # q = [f, 1, 0, 0...]: q.k = 2 f.v - |v|^2 = |f|^2 - |f - v|^2
        self.q_proj.bias[c] = 1.0
        # logits = gq gk sqrt(h) (q.k) / (|q| R) ~ -(gq gk sqrt(h) / R) |f - v|^2 / sqrt(1 + |f|^2) + const
        gain = math.sqrt(self.init_sharpness * math.sqrt(radius_sq) / math.sqrt(self.hidden_dim))
        self.q_norm.weight.fill_(gain)
        self.k_norm.weight.fill_(gain)

    @property
    def needs_data_init(self) -> bool:
        """``init="data"`` and no training batch has initialised the values yet.

        Asked on every training forward (once per level in a stack): the buffer's value is cached and
        re-read only when the buffer is replaced (``.to()``, ``from_pretrained``) or written in place
        (``load_state_dict``, :meth:`data_init`), so a GPU step does not sync with the host for it.
        """
        if self.init != "data":
            return False
        flag = self.data_initialized
        cached = getattr(self, "_initialized_cache", None)  # (buffer, its version, its value)
        if cached is None or cached[0] is not flag or cached[1] != flag._version:
            cached = (flag, flag._version, bool(flag))
            self._initialized_cache = cached
        return not cached[2]

    @torch.no_grad()
    def data_init(self, features: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Restart the codebook on ``(N, C)`` features: ``K`` of them (without replacement when ``N >= K``)
        become the values, refined by ``init_kmeans_iters`` k-means iterations on ``features``, with the
        nearest-neighbour layout of :meth:`nearest_init`.

        ``generator``: a CPU generator for the draw (``None``: the global one). Under an initialised
        ``torch.distributed`` process group rank 0's values are broadcast, so every rank starts from the
        same codebook (call it on every rank, as a training forward does).
        """
        if self.init != "data":
            raise ValueError(f"data_init needs init='data'; this quantizer has init={self.init!r}")
        if features.ndim != 2 or features.shape[1] != self.dim or features.shape[0] < 1:
            raise ValueError(f"features must be (N >= 1, {self.dim}); got {tuple(features.shape)}")
        features = features.detach().float()
        values = sample_rows(features, self.codebook_size, generator)  # (K, C)
        if self.init_kmeans_iters:
            values, _ = kmeans(features, self.codebook_size, self.init_kmeans_iters, generator, init=values)
        broadcast_(values)
        self.nearest_init(values)
        self.data_initialized.fill_(True)

    @property
    def restarts_rare_codes(self) -> bool:
        return self.init_min_usage > 0

    @torch.no_grad()
    def restart_rare_codes(
        self, features: torch.Tensor, generator: torch.Generator | None = None, indices: torch.Tensor | None = None,
    ) -> int:
        """Restart the codes that ``(N, C)`` features use fewer than ``init_min_usage * N / K`` times on
        features drawn at random (keeping every other code); returns how many (``0`` when
        ``init_min_usage`` is 0). Counts are summed over processes and rank 0's draw is broadcast, so
        every rank keeps the same codebook. ``indices``: the ``(N,)`` codes of ``features`` under the
        current codebook (an eval encoding's), to count them without searching again.
        """
        if not self.init_min_usage:
            return 0
        features = features.detach().float()
        if indices is None:
            indices = self.search(features)["indices"]
        elif indices.shape != features.shape[:1]:
            raise ValueError(f"indices must be ({features.shape[0]},), one code per feature; got {tuple(indices.shape)}")
        counts = torch.bincount(indices.long(), minlength=self.codebook_size)  # (K,)
        total = torch.tensor(float(features.shape[0]), device=counts.device)
        counts, total = all_reduce_(counts), all_reduce_(total)
        rare = counts < self.init_min_usage * total / self.codebook_size  # (K,) bool
        n_rare = int(rare.sum())
        if n_rare == 0:
            return 0
        values = self.values().detach().float().clone()  # (K, C)
        values[rare] = sample_rows(features, n_rare, generator)
        broadcast_(values)
        self.nearest_init(values)
        return n_rare

    def initialize(self, z: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """:meth:`data_init` on the tokens of ``(B, C, H, W)`` latents when :attr:`needs_data_init`, then
        up to :data:`~.base.INIT_RESTART_ROUNDS` rounds of :meth:`restart_rare_codes`."""
        self._check_input(z)
        if self.needs_data_init:
            tokens = to_tokens(z)
            self.data_init(tokens, generator)
            for _ in range(INIT_RESTART_ROUNDS):
                if not self.restart_rare_codes(tokens, generator):
                    break

    # -- pieces shared by training, eval and decoding ------------------------------------------------
    def queries(self, f: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` features -> ``(N, hidden)`` normalised queries."""
        return self.q_norm(self.q_proj(f))

    def keys(self) -> torch.Tensor:
        """``(K, hidden)`` normalised keys of the codebook."""
        return self.k_norm(self.k_proj(self.embedding))

    @torch.no_grad()
    def _eval_keys(self) -> torch.Tensor:
        """:meth:`keys` for the eval search, reused while the parameters are unchanged.

        A multi-scale quantizer with a shared codebook searches it once per level (10 times per image for
        CODA); the keys depend only on the codebook, ``k_proj`` and ``k_norm``. The cache is keyed by each
        parameter's storage and version counter, so an optimizer step, ``load_state_dict`` or ``.to()``
        invalidates it.
        """
        if torch.compiler.is_compiling():  # traced graphs compute them in the graph, unless constant_keys
            constant = self.__dict__.get("_constant_keys")
            return self.keys() if constant is None else constant
        params = [p for p in (self.embedding, self.k_proj.weight, self.k_proj.bias, self.k_norm.weight) if p is not None]
        stamp = tuple((p.data_ptr(), p._version, p.dtype) for p in params)
        cached = getattr(self, "_keys_cache", None)
        if cached is None or cached[0] != stamp:
            cached = (stamp, self.keys())
            self._keys_cache = cached
        return cached[1]

    @contextlib.contextmanager
    def constant_keys(self):
        """Inside the block, a traced graph (export) takes the eval keys as a constant computed here, in
        eager PyTorch, instead of computing them in the graph: the exported search then scores against the
        same bits as the eager one. (Another runtime's projection and RMSNorm can round two identical
        codebook rows differently, which changes which of two identical codes wins the argmax.)"""
        self._constant_keys = self._eval_keys().detach().clone()
        try:
            yield
        finally:
            self._constant_keys = None

    def values(self) -> torch.Tensor:
        """``(K, C)`` values: every code mapped into latent space."""
        return self.v_proj(self.embedding)

    def logits(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``(n, hidden) x (K, hidden)`` -> ``(n, K)`` attention logits ``q k^T / sqrt(hidden)``."""
        return (queries @ keys.t()) * self.scale

    def _codes(self, idx: torch.Tensor) -> torch.Tensor:
        """``(N,)`` indices -> ``(N, C)`` values ``V[idx]`` (the one path forward and decode share)."""
        return self.v_proj(F.embedding(idx.reshape(-1).long(), self.embedding))

    def indices_to_codes(self, indices: list[torch.Tensor]) -> torch.Tensor:
        idx = indices[0]  # (B, H, W)
        b, h, w = idx.shape
        return from_tokens(self._codes(idx), b, h, w)

    def _eval_chunk(self, n: int) -> int:
        if self.chunk_size is None:
            return max(1, ATTENTION_CHUNK_ELEMENTS // self.codebook_size)
        return n if self.chunk_size == 0 else self.chunk_size

    def _eval_argmax(self, queries: torch.Tensor, keys: torch.Tensor, chunk: int) -> torch.Tensor:
        """Indices of the eval search: with the automatic ``chunk_size`` on CPUs with native bf16 products and
        large codebooks, the bf16-screened exact search (:mod:`.attention_screen`); else the float32 search
        in ``chunk``-token tiles."""
        if self.chunk_size is not None or not screen_supported(queries, keys):
            return attention_argmax(queries, keys, chunk)
        cached = getattr(self, "_screen_cache", None)  # (keys it was built from, ScreenKeys)
        if cached is None or cached[0] is not keys:  # _eval_keys returns one tensor while nothing changed
            cached = (keys, ScreenKeys.build(keys))
            self._screen_cache = cached
        return screened_argmax(queries, cached[1])

    def _soft_assign(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor):
        """Training pieces for ``(n, hidden)`` queries: what backward needs, without the ``(n, K)`` scores.

        Returns ``(idx (n,), soft V (n, C), soft sg[V] (n, C), sum_n H(p_n), sum_n p_n (K,))``.
        """
        logits = self.logits(queries, keys)  # (n, K)
        soft = logits.softmax(dim=-1)
        z_soft = soft @ values  # (n, C)
        st = soft @ values.detach()  # (n, C): gradient path of the IBQ straight-through output
        if self.entropy_weight:
            ent, probs = entropy_terms(logits, self.entropy_temperature)
        else:
            ent, probs = logits.new_zeros(()), logits.new_zeros(self.codebook_size)
        return logits.argmax(dim=-1), z_soft, st, ent, probs

    def _fused(self, n: int) -> bool:
        """Whether ``n`` tokens take the fused kernel (``fused_threshold``)."""
        return self.fused_threshold is not None and n * self.codebook_size >= self.fused_threshold

    def _fused_assign(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor):
        """:meth:`_soft_assign` through the tiled kernel of :mod:`.attention_fused` (same outputs)."""
        return fused_soft_assign(queries, keys, values, self.scale, self.entropy_temperature, bool(self.entropy_weight))

    def _train_assign(self, f: torch.Tensor):
        """:meth:`_soft_assign` over all ``(N, C)`` features: fused above ``fused_threshold``, else whole or in
        ``train_chunk_size`` chunks under activation checkpointing."""
        queries, keys, values = self.queries(f), self.keys(), self.values()
        n, chunk = f.shape[0], self.train_chunk_size
        if self._fused(n):
            return self._fused_assign(queries, keys, values)
        if chunk <= 0 or chunk >= n:
            return self._soft_assign(queries, keys, values)
        parts = [
            torch.utils.checkpoint.checkpoint(
                self._soft_assign, queries[start : start + chunk], keys, values, use_reentrant=False
            )
            for start in range(0, n, chunk)
        ]
        idx, z_soft, st, ent, probs = zip(*parts)
        return torch.cat(idx), torch.cat(z_soft), torch.cat(st), torch.stack(ent).sum(), torch.stack(probs).sum(0)

    @torch.no_grad()
    def search(self, f: torch.Tensor, with_losses: bool = False) -> dict[str, torch.Tensor]:
        """Chunked eval search over ``(N, C)`` features; never holds more than ``chunk * K`` scores.

        Returns ``{"indices": (N,)}`` and, with ``with_losses``, the summed pieces of the losses:
        ``"soft_sse"`` (squared error of ``soft V`` against ``f``), ``"sample_entropy_sum"``, ``"prob_sum"`` (K,).
        """
        n = f.shape[0]
        queries, keys = self.queries(f), self._eval_keys()  # (N, hidden), (K, hidden)
        chunk = max(1, self._eval_chunk(n))
        if not with_losses:  # argmax is unchanged by the positive 1/sqrt(hidden): skip that pass over the scores
            return {"indices": self._eval_argmax(queries, keys, chunk)}
        values = self.values()  # (K, C)
        if self._fused(n):
            idx, z_soft, _, ent, probs = self._fused_assign(queries, keys, values)
            soft_sse = (z_soft.float() - f.float()).pow(2).sum()
            return {"indices": idx, "soft_sse": soft_sse, "sample_entropy_sum": ent.float(), "prob_sum": probs.float()}
        out: dict[str, torch.Tensor] = {"indices": torch.empty(n, dtype=torch.long, device=f.device)}
        out["soft_sse"] = f.new_zeros((), dtype=torch.float32)
        out["sample_entropy_sum"] = f.new_zeros((), dtype=torch.float32)
        out["prob_sum"] = f.new_zeros(self.codebook_size, dtype=torch.float32)
        for start in range(0, n, chunk):
            q_chunk = queries[start : start + chunk]  # (n_c, hidden)
            idx, z_soft, _, ent, probs = self._soft_assign(q_chunk, keys, values)
            out["soft_sse"] += (z_soft.float() - f[start : start + chunk].float()).pow(2).sum()
            out["sample_entropy_sum"] += ent
            out["prob_sum"] += probs
            out["indices"][start : start + chunk] = idx
        return out

    # -- forward ------------------------------------------------------------------------------------
    @autocast_off
    def forward(self, z: torch.Tensor, with_losses: bool | None = None) -> QuantizerOutput:
        """``(B, C, H, W)`` -> :class:`QuantizerOutput` with one ``(B, H, W)`` index map; eval losses when
        ``with_losses`` (``None``: ``eval_losses``)."""
        self._check_input(z)
        b, _, h, w = z.shape
        f = to_tokens(z)  # (N, C), N = B*H*W
        n = f.shape[0]
        losses: dict[str, torch.Tensor] = {}
        if self.training and self.needs_data_init:  # standalone use; a residual stack initialises it first
            self.initialize(z)
        if self.training:
            idx, z_soft, st, ent, probs = self._train_assign(f)  # (N,), (N, C), (N, C), (), (K,)
            z_hard = self._codes(idx)  # (N, C) = V[idx]
            # IBQ straight-through: value of onehot @ V, gradient of soft @ V (w.r.t. the soft weights).
            quantized = from_tokens(straight_through(z_hard, st), b, h, w)
            losses["quant"] = ibq_quant_loss(
                F.mse_loss(z_soft, f), F.mse_loss(z_hard.detach(), f), F.mse_loss(z_hard, f.detach()), self.beta
            )
            if self.entropy_weight:
                losses["entropy"] = self.entropy_weight * entropy_penalty(ent, probs, n)
            self.usage.update(idx)
        else:
            with_losses = self.eval_losses if with_losses is None else with_losses
            found = self.search(f, with_losses=with_losses)
            idx = found["indices"]
            quantized = self.indices_to_codes([idx.reshape(b, h, w)])
            if with_losses:
                z_hard = to_tokens(quantized).detach()
                hard_mse = F.mse_loss(z_hard, f.detach())
                soft_mse = found["soft_sse"] / max(f.numel(), 1)
                losses["quant"] = ibq_quant_loss(soft_mse, hard_mse, hard_mse, self.beta)
                if self.entropy_weight:
                    penalty = entropy_penalty(found["sample_entropy_sum"], found["prob_sum"], n)
                    losses["entropy"] = self.entropy_weight * penalty
        return self._level_output(quantized, idx.reshape(b, h, w), losses, quantized, z)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, codebook_dim={self.codebook_dim}, "
            f"hidden_dim={self.hidden_dim}, beta={self.beta}, entropy_weight={self.entropy_weight}, init={self.init!r}"
            + (f", init_kmeans_iters={self.init_kmeans_iters}" if self.init_kmeans_iters else "")
            + (f", init_min_usage={self.init_min_usage}" if self.init_min_usage else "")
        )
