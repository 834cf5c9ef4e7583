"""Tile-wise quantization (``latent_tile_size``): layout, equivalence with tile-by-tile encoding, round trips."""

from __future__ import annotations

import copy

import pytest
import torch
from _helpers_coda import images, tiny_coda

from coda_hf.models import CodaVQModel, VQGANModel
from coda_hf.models.latent_tiles import from_mosaic, from_tiles, tile_grid, to_mosaic, to_tiles
from coda_hf.quantizers.output import flatten_indices


def test_tiles_and_mosaics_round_trip_in_the_documented_order():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    tiles = to_tiles(x, 2)  # 2 x 3 tiles per image
    assert tiles.shape == (12, 3, 2, 2)
    assert torch.equal(tiles[1 * 6 + 1 * 3 + 2], x[1, :, 2:4, 4:6])  # image 1, tile (1, 2)
    assert torch.equal(from_tiles(tiles, (2, 3)), x)
    codes = torch.arange(12 * 2 * 2).reshape(12, 2, 2)
    mosaic = to_mosaic(codes, (2, 3))
    assert mosaic.shape == (2, 4, 6) and torch.equal(mosaic[1, 2:4, 4:6], codes[1 * 6 + 1 * 3 + 2])
    assert torch.equal(from_mosaic(mosaic, (2, 3)), codes)
    with pytest.raises(ValueError, match="does not split into 4 x 4 tiles"):
        tile_grid(4, 6, 4)


def _tiled(model: CodaVQModel, tile: int) -> CodaVQModel:
    tiled = copy.deepcopy(model)
    tiled.register_to_config(latent_tile_size=tile)  # what train_bundled.py does to a trained model
    return tiled.eval()


@torch.no_grad()
def test_tiled_encoding_is_each_tile_quantized_alone_and_decodes_back():
    model = tiny_coda()  # factor 2, scales [1, 2, 4]
    tiled = _tiled(model, 4)  # 4 x 4 latent tiles = 8 x 8 pixel crops
    x = images(batch=2, size=16).repeat(1, 1, 1, 2)[..., :24]  # (2, 3, 16, 24): 2 x 3 tiles of 8 px
    assert tiled.size_divisor == 8 and tiled.level_shapes(16, 24) == [(2, 3), (4, 6), (8, 12)]
    enc = tiled.encode(x)
    assert enc.token_ids.shape == (2, 6 * (1 + 4 + 16)) and tiled.num_tokens(16, 24) == 126
    assert torch.equal(enc.token_ids, flatten_indices(enc.indices))  # level-major mosaics
    latents = model.encode_latents(x)
    alone = model.quantizer(to_tiles(latents, 4), with_losses=False)  # every tile as an image of its own
    for level, idx in enumerate(enc.indices):
        assert torch.equal(from_mosaic(idx, (2, 3)), alone.indices[level])
    assert torch.allclose(enc.quantized, from_tiles(alone.quantized, (2, 3)))
    # the encoder and decoder run on the whole image: latents are the untiled model's
    assert torch.equal(enc.latents, latents)
    decoded = tiled.decode(enc.indices)
    assert torch.equal(tiled.decode(enc.token_ids, image_size=(16, 24)), decoded)
    assert torch.equal(tiled.decode(enc.token_ids[:, :], latent_size=(8, 12)), decoded)
    assert torch.allclose(decoded, tiled.decode_latents(enc.quantized).clamp(-1, 1))
    square = tiled.encode(x[..., :16])
    assert torch.equal(tiled.decode(square.token_ids), tiled.decode(square.indices))  # inferred 8 x 8 latent
    # one tile: the same tokens as the untiled model; training forward goes through the tiles too
    one = x[:1, :, :8, :8]
    assert torch.equal(tiled.encode(one).token_ids, model.encode(one).token_ids)
    out = tiled.train()(x)
    assert out.sample.shape == x.shape and [i.shape for i in out.indices] == [(2, 2, 3), (2, 4, 6), (2, 8, 12)]


def test_tiled_sizes_are_checked_and_the_option_round_trips(tmp_path):
    tiled = _tiled(tiny_coda(), 4)
    with pytest.raises(ValueError, match=r"multiple of 8 \(downsample factor 2 x latent tile 4\)"):
        tiled.encode(images(batch=1, size=12))
    assert tiled.min_image_size == 8 and tiled.default_image_processor().size_divisor == 8
    tiled.save_pretrained(tmp_path)
    loaded = CodaVQModel.from_pretrained(tmp_path)
    assert loaded.config.latent_tile_size == 4 and loaded.level_shapes(16, 16) == tiled.level_shapes(16, 16)
    from transformers import AutoModel

    import coda_hf.transformers_integration  # noqa: F401  (registers coda_vq)

    wrapped = AutoModel.from_pretrained(tmp_path)
    assert wrapped.config.latent_tile_size == 4 and wrapped.coda.latent_tile_size == 4
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="latent_tile_size must be an int >= 0"):
            CodaVQModel(vae_config=tiled.config.vae_config, quantizer=tiled.config.quantizer, latent_tile_size=bad)
    assert tiny_coda().latent_tile_size == 0  # default: the whole latent, as before the option


@torch.no_grad()
def test_vqgan_tiles_too():
    quantizer = {"name": "multiscale", "scales": [1, 2], "quantizer": "vq", "quantizer_kwargs": {"codebook_size": 8}}
    kw = dict(block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4, latent_channels=4, embed_dim=4,
              quantizer=quantizer, mid_block_add_attention=False)  # fmt: skip
    torch.manual_seed(0)
    plain = VQGANModel(**kw).eval()
    tiled = VQGANModel(**kw, latent_tile_size=2).eval()
    tiled.load_state_dict(plain.state_dict())
    x = images(batch=1, size=8)
    enc = tiled.encode(x)
    assert [tuple(i.shape) for i in enc.indices] == [(1, 2, 2), (1, 4, 4)]
    alone = plain.quantizer(to_tiles(plain.encode_latents(x), 2), with_losses=False)
    assert torch.equal(from_mosaic(enc.indices[-1], (2, 2)), alone.indices[-1])
    with pytest.raises(ValueError, match="latent_tile_size"):
        VQGANModel(**kw, latent_tile_size=-2)
