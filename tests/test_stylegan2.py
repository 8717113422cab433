"""StyleGAN2 networks on tiny configs: shapes, determinism, truncation, mixing, state round trip,
gradients, activation scale, bf16 autocast, channels_last, minibatch stddev."""

from __future__ import annotations

import json
import math

import pytest
import torch

import torch.nn.functional as F

from lowshot.models.stylegan2 import (
    Conv2d,
    Discriminator,
    Generator,
    MinibatchStd,
    StyleGAN2Config,
    SynthesisBlock,
    downsample2d,
    modulated_conv2d,
    upsample2d,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: threads only add contention


def _models(resolution: int = 32, seed: int = 0) -> tuple[StyleGAN2Config, Generator, Discriminator]:
    torch.manual_seed(seed)
    cfg = StyleGAN2Config.tiny(resolution)
    return cfg, Generator(cfg), Discriminator(cfg)


def _with_noise(g: Generator, strength: float = 0.5) -> Generator:
    # noise strengths start at zero (as the reference); make the noise inputs matter
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(strength)
    return g


def _upfirdn(x: torch.Tensor, up: int, down: int, pad: tuple[int, int], gain: float = 1.0) -> torch.Tensor:
    """upfirdn2d by its definition: zero insertion, padding, the [1,3,3,1] filter, decimation."""
    n, c, h, w = x.shape
    u = x.new_zeros(n, c, h * up, w * up)
    u[:, :, ::up, ::up] = x
    u = F.pad(u, (pad[0], pad[1], pad[0], pad[1]))
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = (torch.outer(f, f) / 64 * gain).expand(c, 1, 4, 4)
    return F.conv2d(u, f, groups=c)[:, :, ::down, ::down]


def test_resampling_matches_the_upfirdn2d_definition():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(upsample2d(x), _upfirdn(x, 2, 1, (2, 1), gain=4.0))
    torch.testing.assert_close(downsample2d(x), _upfirdn(x, 1, 2, (1, 1)))
    # a constant image stays constant away from the border: the filters have unit DC gain
    assert torch.allclose(upsample2d(torch.ones(1, 1, 8, 8))[..., 2:-2, 2:-2], torch.tensor(1.0))

    # modulated upsampling conv == the reference's conv2d_resample: zero insertion, padding (3, 2),
    # FIR filter (gain 4), 3x3 conv with the modulated/demodulated weight, no crop in between
    weight, styles = torch.randn(5, 3, 3, 3), torch.randn(2, 3)
    wmod = weight * styles[:, None, :, None, None]
    wmod = wmod * wmod.square().sum(dim=(2, 3, 4), keepdim=True).rsqrt()
    expected = torch.cat([F.conv2d(_upfirdn(x[i: i + 1], 2, 1, (3, 2), gain=4.0), wmod[i]) for i in range(2)])
    for fused in (True, False):
        torch.testing.assert_close(modulated_conv2d(x, weight, styles, up=True, fused=fused), expected,
                                   rtol=1e-4, atol=1e-4)

    # the discriminator's blur-first strided conv == conv (pad 2) then blur and decimate
    conv = Conv2d(3, 4, 3, bias=False, act=False, down=True)
    expected = _upfirdn(F.conv2d(x, conv.weight * conv.weight_gain, padding=2), 1, 2, (0, 0))
    torch.testing.assert_close(conv(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad", [16, 48, 512, 100])
def test_config_rejects_bad_resolution(bad):
    with pytest.raises(ValueError, match="resolution"):
        StyleGAN2Config(resolution=bad)


def test_config_rejects_bad_fields_and_unknown_keys():
    with pytest.raises(ValueError, match="w_dim"):
        StyleGAN2Config(w_dim=0)
    with pytest.raises(ValueError, match="colour"):
        StyleGAN2Config.from_dict({"resolution": 64, "colour": 3})


def test_config_json_round_trip():
    cfg = StyleGAN2Config(resolution=64, channel_max=128, conv_clamp=None)
    again = StyleGAN2Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_output_shapes(resolution):
    cfg, g, d = _models(resolution)
    z = torch.randn(3, cfg.z_dim)
    ws = g.mapping(z)
    assert ws.shape == (3, 2 * int(math.log2(resolution)) - 2, cfg.w_dim) == (3, g.num_ws, cfg.w_dim)
    img = g.synthesis(ws)
    assert img.shape == (3, 3, resolution, resolution)
    assert torch.isfinite(img).all()
    logits = d(img)
    assert logits.shape == (3,)
    with pytest.raises(ValueError, match="images must have shape"):
        d(torch.randn(2, 3, resolution // 2, resolution // 2))


def test_const_noise_is_deterministic_and_z_matters():
    cfg, g, _ = _models()
    g = _with_noise(g).eval()
    z = torch.randn(2, cfg.z_dim)
    a = g(z, noise_mode="const")
    b = g(z, noise_mode="const")
    assert torch.equal(a, b)
    assert (g(torch.randn(2, cfg.z_dim), noise_mode="const") - a).abs().mean() > 1e-3
    # random noise changes the image for the same z; 'none' differs from 'const'
    assert (g(z, noise_mode="random") - a).abs().mean() > 1e-4
    assert (g(z, noise_mode="none") - a).abs().mean() > 1e-4
    with pytest.raises(ValueError, match="noise_mode"):
        g(z, noise_mode="fixed")


def test_same_seed_builds_same_generator():
    _, g1, _ = _models(seed=3)
    cfg, g2, _ = _models(seed=3)
    z = torch.randn(2, cfg.z_dim)
    assert torch.equal(g1.eval()(z, noise_mode="const"), g2.eval()(z, noise_mode="const"))


def test_fused_and_unfused_modconv_agree():
    cfg, g, _ = _models(64)
    g = _with_noise(g)
    z = torch.randn(3, cfg.z_dim)
    fused = g(z, noise_mode="const", fused_modconv=True)
    unfused = g(z, noise_mode="const", fused_modconv=False)
    torch.testing.assert_close(fused, unfused, rtol=1e-4, atol=1e-4)


def test_w_avg_tracks_only_when_asked_and_psi_zero_collapses_to_it():
    cfg, g, _ = _models()
    g.eval()
    z = torch.randn(8, cfg.z_dim)
    g(z)
    assert torch.count_nonzero(g.mapping.w_avg) == 0
    g(z, update_w_avg=True)
    w = g.mapping(z)[:, 0]
    torch.testing.assert_close(g.mapping.w_avg, 0.005 * w.mean(0))  # lerp from 0 with beta 0.995
    for _ in range(3):
        g(torch.randn(8, cfg.z_dim), update_w_avg=True)

    z1, z2 = torch.randn(1, cfg.z_dim), torch.randn(1, cfg.z_dim)
    a = g(z1, psi=0.0, noise_mode="const")
    b = g(z2, psi=0.0, noise_mode="const")
    torch.testing.assert_close(a, b)
    assert (g(z1, noise_mode="const") - a).abs().mean() > 1e-4
    # a cutoff truncates only the first layers
    ws = g.mapping(torch.cat([z1, z2]), psi=0.0, truncation_cutoff=2)
    torch.testing.assert_close(ws[:, :2], g.mapping.w_avg.expand(2, 2, -1))
    assert not torch.allclose(ws[0, 2:], ws[1, 2:])


def test_style_mixing_replaces_a_suffix_of_the_styles():
    cfg, g, _ = _models()
    g.eval()
    z = torch.randn(6, cfg.z_dim)
    plain, ws_plain = g(z, noise_mode="const", return_ws=True)
    torch.manual_seed(1)
    mixed, ws_mixed = g(z, noise_mode="const", style_mix_prob=1.0, return_ws=True)
    assert (mixed - plain).abs().mean() > 1e-4
    torch.testing.assert_close(ws_mixed[:, 0], ws_plain[:, 0])  # crossover is at layer >= 1
    for i in range(6):
        changed = (ws_mixed[i] != ws_plain[i]).any(dim=1)
        first = int(changed.float().argmax())
        assert changed.any() and changed[first:].all() and not changed[:first].any()
    # probability 0 leaves the styles alone
    torch.testing.assert_close(g(z, noise_mode="const", style_mix_prob=0.0), plain)


def test_state_dict_round_trip_rebuilds_identical_models():
    cfg, g, d = _models(64)
    g = _with_noise(g)
    g(torch.randn(4, cfg.z_dim), update_w_avg=True)  # buffers must travel too
    rebuilt_cfg = StyleGAN2Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    torch.manual_seed(123)  # a different init, overwritten by the load
    g2, d2 = Generator(rebuilt_cfg), Discriminator(rebuilt_cfg)
    g2.load_state_dict(g.state_dict())
    d2.load_state_dict(d.state_dict())
    g.eval(), g2.eval()
    z = torch.randn(2, cfg.z_dim)
    img = g(z, psi=0.7, noise_mode="const")
    assert torch.equal(img, g2(z, psi=0.7, noise_mode="const"))
    assert torch.equal(d(img), d2(img))


def test_gradients_reach_mapping_const_and_noise_strength():
    cfg, g, d = _models()
    z = torch.randn(4, cfg.z_dim)
    loss = d(g(z, style_mix_prob=0.5)).mean()
    loss.backward()
    for name, p in [("mapping", g.mapping.layers[0].weight), ("const", g.synthesis.blocks[0].const),
                    ("noise_strength", g.synthesis.blocks[-1].conv1.noise_strength),
                    ("d_fromrgb", d.fromrgb.weight)]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_demodulation_keeps_activation_scale_with_depth():
    torch.manual_seed(0)
    cfg = StyleGAN2Config(resolution=128, z_dim=32, w_dim=32, channel_base=4096, channel_max=32)
    g = Generator(cfg).eval()
    stds = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: stds.append(out[0].std().item()))
             for m in g.modules() if isinstance(m, SynthesisBlock)]
    with torch.no_grad():
        img = g(torch.randn(4, cfg.z_dim), noise_mode="none")
    for h in hooks:
        h.remove()
    assert len(stds) == 6
    assert all(0.3 < s < 3.0 for s in stds), stds
    assert 0.1 < img.std().item() < 10.0


def test_discriminator_activation_scale_at_init():
    cfg, _, d = _models(128)
    with torch.no_grad():
        logits = d(torch.randn(8, 3, 128, 128))
    assert torch.isfinite(logits).all() and logits.abs().max() < 10


def test_bf16_autocast_forward_and_backward_are_finite():
    cfg, g, d = _models(64)
    z = torch.randn(4, cfg.z_dim)
    for fused in (True, False):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            img = g(z, fused_modconv=fused, style_mix_prob=0.5)
            logits = d(img)
        assert img.shape == (4, 3, 64, 64) and torch.isfinite(img).all()
        assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
        logits.mean().backward()
        assert all(torch.isfinite(p.grad).all() for p in g.parameters() if p.grad is not None)


def test_channels_last_inputs_and_weights():
    cfg, g, d = _models(32)
    g.eval()
    z = torch.randn(3, cfg.z_dim)
    img = g(z, noise_mode="const")
    ref_logits = d(img)
    torch.testing.assert_close(d(img.contiguous(memory_format=torch.channels_last)), ref_logits, rtol=1e-4, atol=1e-4)
    g.to(memory_format=torch.channels_last)
    d.to(memory_format=torch.channels_last)
    for fused in (True, False):
        torch.testing.assert_close(g(z, noise_mode="const", fused_modconv=fused), img, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(d(img.contiguous(memory_format=torch.channels_last)), ref_logits, rtol=1e-4, atol=1e-4)


def _group_std(x: torch.Tensor) -> torch.Tensor:
    """Mean over (C,H,W) of the stddev over the first dim."""
    return (x.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()


def test_mbstd_matches_groups_of_the_reference_when_divisible():
    x = torch.randn(8, 5, 4, 4)
    out = MinibatchStd(4)(x)
    assert out.shape == (8, 6, 4, 4)
    torch.testing.assert_close(out[:, :5], x)
    # reference grouping: reshape (G, N/G, ...) puts samples i and i + N/G in the same group
    for i in range(8):
        expected = _group_std(x[[j for j in range(8) if j % 2 == i % 2]])
        torch.testing.assert_close(out[i, 5], expected.expand(4, 4))


@pytest.mark.parametrize("batch", [1, 3, 5, 7])
def test_mbstd_handles_batches_not_divisible_by_the_group(batch):
    x = torch.randn(batch, 5, 4, 4)
    out = MinibatchStd(4)(x)
    groups = -(-batch // min(4, batch))
    for i in range(batch):
        members = [j for j in range(batch) if j % groups == i % groups]
        torch.testing.assert_close(out[i, 5], _group_std(x[members]).expand(4, 4))
    cfg, g, d = _models()
    logits = d(torch.randn(batch, 3, 32, 32))
    assert logits.shape == (batch,) and torch.isfinite(logits).all()


def test_r1_and_path_length_backpropagate_through_the_networks():
    from lowshot.train.losses import PathLengthPenalty, r1_penalty

    cfg, g, d = _models(32)
    reals = torch.randn(4, 3, 32, 32).requires_grad_(True)
    r1 = r1_penalty(reals, d(reals))
    assert r1.shape == (4,) and (r1 > 0).all()
    r1.mean().backward()  # double backward through the blurred strided convs
    assert d.fromrgb.weight.grad.abs().sum() > 0

    imgs, ws = g(torch.randn(4, cfg.z_dim), style_mix_prob=0.9, return_ws=True)
    pl = PathLengthPenalty()
    penalty = pl(imgs, ws)
    assert penalty.shape == (4,) and float(pl.pl_mean) > 0
    penalty.mean().backward()  # double backward through the modulated (transposed) convs
    weight = g.synthesis.blocks[1].conv0.weight
    assert weight.grad is not None and torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0
