"""A minimal test-only quantizer, registered under ``_test_nearest``: shows that VQGANModel takes any
quantizer from the registry by its config dict (independent of the library's own quantizers)."""

import torch
import torch.nn.functional as F
from torch import nn

from coda_hf.quantizers import QUANTIZER_REGISTRY, BaseQuantizer, QuantizerOutput, register_quantizer

TEST_QUANTIZER = "_test_nearest"


class _NearestQuantizer(BaseQuantizer):
    def __init__(self, dim: int = 4, codebook_size: int = 16, beta: float = 0.25):
        super().__init__()
        self.dim, self.codebook_size, self.beta = dim, codebook_size, beta
        self.codebook = nn.Embedding(codebook_size, dim)

    def forward(self, z):
        self._check_input(z)
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim)  # (B*H*W, C)
        idx = torch.cdist(flat, self.codebook.weight).argmin(dim=1)
        indices = idx.view(z.shape[0], *z.shape[2:])  # (B, H, W)
        zq = self.indices_to_codes([indices])
        losses = {
            "commitment": self.beta * F.mse_loss(z, zq.detach()),
            "codebook": F.mse_loss(zq, z.detach()),
        }
        return QuantizerOutput(quantized=z + (zq - z).detach(), indices=[indices], losses=losses, stats={})

    def indices_to_codes(self, indices):
        return self.codebook(indices[0]).permute(0, 3, 1, 2)  # (B, C, H, W)


if TEST_QUANTIZER not in QUANTIZER_REGISTRY:
    register_quantizer(TEST_QUANTIZER)(_NearestQuantizer)
