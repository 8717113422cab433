from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from lowshot.models.cyclegan import CycleGANConfig, PatchDiscriminator, ResnetGenerator, init_weights
from lowshot.train.image_pool import ImagePool


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: threads only add contention


def _tiny_pair(seed: int = 0) -> tuple[ResnetGenerator, PatchDiscriminator]:
    torch.manual_seed(seed)
    cfg = CycleGANConfig.tiny()
    return ResnetGenerator.from_config(cfg), PatchDiscriminator.from_config(cfg)


def test_generator_preserves_size_and_range():
    G, _ = _tiny_pair()
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    y = G(x)
    assert y.shape == x.shape
    assert y.min() >= -1 and y.max() <= 1
    assert G(torch.rand(2, 3, 36, 52)).shape == (2, 3, 36, 52)  # any multiple of 4, not square


def test_generator_rejects_sizes_not_multiple_of_4():
    G, _ = _tiny_pair()
    with pytest.raises(ValueError, match="divisible by 4.*130x128"):
        G(torch.rand(1, 3, 130, 128))


def test_generator_layout_matches_the_paper():
    G = ResnetGenerator(ngf=8, n_blocks=6)
    convs = [m for m in G.modules() if isinstance(m, nn.Conv2d)]
    ups = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert convs[0].kernel_size == (7, 7) and convs[-1].kernel_size == (7, 7)
    assert [c.stride for c in convs[1:3]] == [(2, 2), (2, 2)]
    assert len(convs) == 3 + 2 * 6 + 1
    assert [u.output_padding for u in ups] == [(1, 1), (1, 1)]
    norms = [m for m in G.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(not n.affine and not n.track_running_stats for n in norms)
    assert sum(isinstance(m, nn.ReflectionPad2d) for m in G.modules()) == 2 + 2 * 6


@pytest.mark.parametrize("size, patches", [(256, 30), (128, 14)])
def test_patch_discriminator_shape(size, patches):
    D = PatchDiscriminator(ndf=8)
    assert D(torch.rand(1, 3, size, size)).shape == (1, 1, patches, patches)


def test_patch_discriminator_receptive_field_is_70():
    assert PatchDiscriminator(ndf=8).receptive_field == 70
    assert PatchDiscriminator(ndf=8, n_layers=1).receptive_field == 16
    # Check it empirically: without instance norm (which mixes the whole image) the gradient of
    # one logit reaches exactly a receptive_field-wide square of input pixels.
    torch.manual_seed(0)
    D = PatchDiscriminator(ndf=4, norm="none").double()
    x = torch.rand(1, 3, 128, 128, dtype=torch.float64, requires_grad=True)
    logits = D(x)
    logits[0, 0, 7, 7].backward()
    rows, cols = (x.grad.abs().sum(dim=(0, 1)) > 0).nonzero(as_tuple=True)
    assert rows.max() - rows.min() + 1 == 70
    assert cols.max() - cols.min() + 1 == 70


def test_first_discriminator_layer_has_no_norm():
    D = PatchDiscriminator(ndf=8)
    layers = list(D.model)
    assert isinstance(layers[0], nn.Conv2d) and isinstance(layers[1], nn.LeakyReLU)
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in layers) == 3
    assert all(m.negative_slope == 0.2 for m in layers if isinstance(m, nn.LeakyReLU))


def test_init_weights_statistics():
    torch.manual_seed(0)
    G = ResnetGenerator(ngf=16, n_blocks=2, norm="batch")
    w = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(w.mean()) < 1e-3 and abs(w.std() - 0.02) < 1e-3
    bn = torch.cat([m.weight for m in G.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(bn.mean() - 1) < 5e-3 and abs(bn.std() - 0.02) < 5e-3
    init_weights(G, std=0.1)
    w = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, nn.Conv2d)])
    assert abs(w.std() - 0.1) < 5e-3
    assert all((m.bias == 0).all() for m in G.modules() if isinstance(m, nn.Conv2d) and m.bias is not None)


def test_seeded_init_determinism_and_state_round_trip():
    G1, D1 = _tiny_pair(seed=3)
    G2, D2 = _tiny_pair(seed=3)
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(G1(x), G2(x)) and torch.equal(D1(x), D2(x))
    cfg = CycleGANConfig.from_dict(CycleGANConfig.tiny().to_dict())
    torch.manual_seed(99)
    G3, D3 = ResnetGenerator.from_config(cfg), PatchDiscriminator.from_config(cfg)
    assert not torch.equal(G3(x), G1(x))
    G3.load_state_dict(G1.state_dict())
    D3.load_state_dict(D1.state_dict())
    assert torch.equal(G3(x), G1(x)) and torch.equal(D3(x), D1(x))


def test_gradients_reach_every_parameter():
    G, D = _tiny_pair()
    D(G(torch.rand(1, 3, 64, 64))).mean().backward()
    assert [n for m in (G, D) for n, p in m.named_parameters() if p.grad is None] == []


def test_bf16_autocast_and_channels_last():
    G, D = _tiny_pair()
    x = torch.rand(1, 3, 64, 64)
    y = G(x)
    G.to(memory_format=torch.channels_last)
    torch.testing.assert_close(G(x.contiguous(memory_format=torch.channels_last)), y, atol=1e-5, rtol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = D(G(x))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


def test_config_validation():
    with pytest.raises(ValueError, match="norm"):
        CycleGANConfig(norm="layer")
    with pytest.raises(ValueError, match="extra"):
        CycleGANConfig.from_dict({"extra": 1})


# ImagePool ------------------------------------------------------------------------------------


def _batch(start: int, n: int = 2) -> torch.Tensor:
    """Images whose every pixel holds their serial number, so we can tell them apart."""
    return torch.arange(start, start + n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 4, 4).clone()


def _ids(images: torch.Tensor) -> list[int]:
    return [int(im[0, 0, 0]) for im in images]


def test_pool_returns_new_images_until_full_then_mixes():
    pool = ImagePool(size=4, rng=random.Random(0))
    assert _ids(pool.query(_batch(0))) == [0, 1]
    assert _ids(pool.query(_batch(2))) == [2, 3]
    assert len(pool) == 4
    seen_old = seen_new = 0
    for step in range(2, 30):
        out = _ids(pool.query(_batch(2 * step)))
        seen_new += sum(i >= 2 * step for i in out)
        seen_old += sum(i < 2 * step for i in out)
        assert len(pool) == 4
    assert seen_old > 10 and seen_new > 10  # about half each of 56


def test_pool_size_zero_is_passthrough():
    pool = ImagePool(size=0)
    x = torch.rand(3, 3, 4, 4, requires_grad=True)
    assert pool.query(x) is x
    assert len(pool) == 0


def test_pool_returns_detached_images_on_the_input_device():
    pool = ImagePool(size=2, rng=torch.Generator().manual_seed(0))
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    out = pool.query(x)
    assert not out.requires_grad and out.device == x.device


@pytest.mark.parametrize("make_rng", [lambda: random.Random(1), lambda: torch.Generator().manual_seed(1)])
def test_pool_state_round_trip_resumes_identically(make_rng, tmp_path):
    pool = ImagePool(size=3, rng=make_rng())
    for step in range(4):
        pool.query(_batch(2 * step))
    torch.save(pool.state_dict(), tmp_path / "pool.pt")
    resumed = ImagePool(size=3, rng=make_rng())  # fresh RNG; the state restores it
    resumed.load_state_dict(torch.load(tmp_path / "pool.pt", weights_only=True))
    for step in range(4, 12):
        assert _ids(resumed.query(_batch(2 * step))) == _ids(pool.query(_batch(2 * step)))
    with pytest.raises(ValueError, match="size"):
        ImagePool(size=5, rng=make_rng()).load_state_dict(pool.state_dict())


def test_resize_upsampling_replaces_the_transposed_convolutions():
    torch.manual_seed(0)
    G = ResnetGenerator(ngf=8, n_blocks=2, upsample="resize")
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in G.modules())
    assert sum(isinstance(m, nn.Upsample) for m in G.modules()) == 2
    y = G(torch.rand(1, 3, 36, 44) * 2 - 1)
    assert y.shape == (1, 3, 36, 44) and y.abs().max() <= 1
    with pytest.raises(ValueError, match="upsample"):
        CycleGANConfig(upsample="pixelshuffle")


@pytest.mark.parametrize("blocks, taps", [(9, (0, 4, 7, 10, 14)), (6, (0, 4, 7, 10, 14)), (2, (0, 4, 7, 10, 11))])
def test_encoder_taps_are_the_input_the_downsampling_convs_and_two_residual_blocks(blocks, taps):
    G = ResnetGenerator(ngf=4, n_blocks=blocks)
    assert G.encoder_taps == taps
    layers = list(G.model)
    assert isinstance(layers[taps[0]], nn.ReflectionPad2d)
    assert all(isinstance(layers[i], nn.Conv2d) and layers[i].stride == (2, 2) for i in taps[1:3])
    assert all(type(layers[i]).__name__ == "_ResnetBlock" for i in taps[3:])
    x = torch.rand(2, 3, 32, 32)
    feats = G.encode(x)
    assert [tuple(f.shape[1:]) for f in feats][:3] == [(3, 38, 38), (8, 16, 16), (16, 8, 8)]
    assert G.tap_channels() == [f.shape[1] for f in feats]
    y, same = G(x, taps=True)
    assert torch.equal(y, G(x)) and all(torch.equal(a, b) for a, b in zip(feats, same))


def test_xavier_init_for_cut():
    torch.manual_seed(0)
    G = ResnetGenerator(ngf=16, n_blocks=2, init="xavier")
    conv = G.model[1]  # the 7x7 stem: fan_in 3*49, fan_out 16*49
    expected = 0.02 * (2 / (3 * 49 + 16 * 49)) ** 0.5
    assert abs(conv.weight.std().item() - expected) < 0.15 * expected


def test_residual_generator_starts_as_the_identity_and_learns_a_change():
    torch.manual_seed(0)
    G = ResnetGenerator.from_config(CycleGANConfig(ngf=8, ndf=8, g_blocks=2, residual=True))
    x = torch.rand(2, 3, 32, 36) * 1.8 - 0.9
    y, feats = G(x, taps=True)
    assert torch.allclose(y, x, atol=1e-5) and torch.equal(y, G(x))
    assert [f.shape for f in feats] == [f.shape for f in G.encode(x)]
    assert G(torch.full((1, 3, 8, 8), 1.0)).abs().max() < 1  # pure white stays finite
    # A few steps towards a darker target move the output: the zero-initialised last conv passes gradients.
    opt = torch.optim.Adam(G.parameters(), lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        (G(x) - (x - 0.5)).square().mean().backward()
        opt.step()
    assert (G(x) - x).mean() < -0.05 and G(x).abs().max() <= 1
    with pytest.raises(ValueError, match="residual"):
        CycleGANConfig(residual="yes")
    with pytest.raises(ValueError, match="in_ch == out_ch"):
        ResnetGenerator(in_ch=1, out_ch=3, residual=True)


def test_antialiased_networks_blur_before_subsampling_and_keep_the_shapes():
    from lowshot.models.cyclegan import BlurPool

    torch.manual_seed(0)
    plain, smooth = CycleGANConfig(ngf=8, ndf=8, g_blocks=2), CycleGANConfig(ngf=8, ndf=8, g_blocks=2, antialias=True)
    x = torch.rand(2, 3, 64, 48) * 2 - 1
    for build in (ResnetGenerator.from_config, PatchDiscriminator.from_config):
        a, b = build(plain), build(smooth)
        assert a(x).shape == b(x).shape
        assert not any(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in b.modules())
        assert sum(isinstance(m, BlurPool) for m in b.modules()) == (2 if isinstance(b, ResnetGenerator) else 3)
        assert [k for k in b.state_dict() if "kernel" in k] == []  # the fixed filter is not a weight
    G = ResnetGenerator.from_config(smooth)
    assert [f.shape[-1] for f in G.encode(x)][1:3] == [48, 24]  # taps at the stride-1 convs, before the blur
    assert PatchDiscriminator.from_config(smooth).receptive_field > PatchDiscriminator.from_config(plain).receptive_field
    # A Nyquist-frequency checkerboard vanishes instead of aliasing to a constant as plain subsampling does.
    board = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1
    board = board.expand(1, 2, 8, 8)
    assert BlurPool(2)(board).abs().max() < 1e-6 and board[..., ::2, ::2].abs().min() == 1
    flat = torch.full((1, 2, 8, 8), 0.3)
    assert torch.allclose(BlurPool(2)(flat), torch.full((1, 2, 4, 4), 0.3))
