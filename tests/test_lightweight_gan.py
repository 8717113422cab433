from __future__ import annotations

import pytest
import torch

from lowshot.models.lightweight_gan import (
    Discriminator,
    Generator,
    LightweightGANConfig,
    SkipExcitation,
)

TEST_RESOLUTIONS = (32, 64, 128)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: threads only add contention


def _build(resolution: int = 32, seed: int = 0) -> tuple[Generator, Discriminator]:
    torch.manual_seed(seed)
    cfg = LightweightGANConfig.tiny(resolution)
    return Generator(cfg), Discriminator(cfg)


def _z(n: int, cfg: LightweightGANConfig, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, cfg.latent_dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("resolution", TEST_RESOLUTIONS)
def test_shapes_and_range(resolution):
    G, D = _build(resolution)
    x = G(_z(2, G.cfg))
    assert x.shape == (2, 3, resolution, resolution)
    assert x.min() >= -1 and x.max() <= 1
    logits, rec = D(x, reconstruct=True)
    assert logits.shape == (2, 1, 5, 5)
    assert D(x).shape == (2, 1, 5, 5)
    whole = min(128, resolution)
    part = min(128, resolution // 2)
    assert rec["whole"].shape == rec["whole_target"].shape == (2, 3, whole, whole)
    assert rec["part"].shape == rec["part_target"].shape == (2, 3, part, part)
    assert rec["quarter"] in range(4)
    assert not rec["whole_target"].requires_grad and not rec["part_target"].requires_grad


def test_reconstruction_targets_are_the_input_and_its_quarter():
    _, D = _build(64)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    _, rec = D(x, reconstruct=True, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(rec["whole_target"], x)
    row, col = divmod(rec["quarter"], 2)
    quarter = x[:, :, row * 32 : row * 32 + 32, col * 32 : col * 32 + 32]
    torch.testing.assert_close(rec["part_target"], quarter)


def test_256_reconstructs_at_128():
    torch.manual_seed(0)
    D = Discriminator(LightweightGANConfig.tiny(256))
    x = torch.rand(1, 3, 256, 256)
    _, rec = D(x, reconstruct=True, generator=torch.Generator().manual_seed(0))
    assert rec["whole"].shape[-1] == rec["part"].shape[-1] == 128
    row, col = divmod(rec["quarter"], 2)
    crop = x[:, :, row * 128 : row * 128 + 128, col * 128 : col * 128 + 128]
    torch.testing.assert_close(rec["part_target"], crop)
    torch.testing.assert_close(rec["whole_target"], torch.nn.functional.avg_pool2d(x, 2))


def test_quarter_choice_is_reproducible():
    _, D = _build(32)
    x = torch.rand(2, 3, 32, 32)

    def quarters(seed):
        gen = torch.Generator().manual_seed(seed)
        return [D(x, reconstruct=True, generator=gen)[1]["quarter"] for _ in range(12)]

    assert quarters(5) == quarters(5)
    assert len(set(quarters(5))) > 1  # the draw really varies from call to call


def test_sle_gates_modulate_the_high_resolution_map():
    torch.manual_seed(0)
    sle = SkipExcitation(8, 6)
    low, high = torch.randn(2, 8, 4, 4), torch.randn(2, 6, 32, 32)
    gated = sle(low, high)
    gated_zero = sle(torch.zeros_like(low), high)
    assert not torch.allclose(gated, gated_zero)
    ratio = gated / high  # one gate in (0, 1) per channel, constant over space
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio), atol=1e-5)
    assert ((ratio > 0) & (ratio < 1)).all()


@pytest.mark.parametrize("resolution", (32, 128))
def test_generator_uses_its_sle_gates(resolution):
    G, _ = _build(resolution)
    G.eval()
    z = _z(2, G.cfg)
    before = G(z)
    for target, source in G.sle_pairs.items():
        # Feed the gate a zeroed low-resolution source: the picture must change.
        def zero_source(module, args, output):
            low, high = args
            return high * module.gate(torch.zeros_like(low))

        handle = G.sle[str(target)].register_forward_hook(zero_source)
        after = G(z)
        handle.remove()
        assert not torch.allclose(before, after), f"gate {source}->{target} has no effect"


def test_seeded_init_is_deterministic():
    G1, D1 = _build(32, seed=7)
    G2, D2 = _build(32, seed=7)
    G3, _ = _build(32, seed=8)
    z = _z(3, G1.cfg)
    x1, x2 = G1(z), G2(z)
    assert torch.equal(x1, x2)
    assert torch.equal(D1(x1), D2(x2))
    assert not torch.equal(x1, G3(z))


def test_state_dict_round_trip_and_rebuild_from_config():
    G, D = _build(64)
    cfg = LightweightGANConfig.from_dict(G.cfg.to_dict())
    assert cfg == G.cfg
    torch.manual_seed(123)  # a different init, overwritten by the load
    G2, D2 = Generator(cfg), Discriminator(cfg)
    G2.load_state_dict(G.state_dict())
    D2.load_state_dict(D.state_dict())
    for m in (G, D, G2, D2):
        m.eval()
    z = _z(2, cfg)
    assert torch.equal(G(z), G2(z))
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(D(x), D2(x))


def test_config_validation():
    with pytest.raises(ValueError, match="resolution"):
        LightweightGANConfig(resolution=48)
    with pytest.raises(ValueError, match="ngf"):
        LightweightGANConfig(ngf=4)
    with pytest.raises(ValueError, match="bogus"):
        LightweightGANConfig.from_dict({"resolution": 32, "bogus": 1})


def test_wrong_input_shapes_raise():
    G, D = _build(32)
    with pytest.raises(ValueError, match="z of shape"):
        G(torch.randn(2, 5))
    with pytest.raises(ValueError, match="32, 32"):
        D(torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize("resolution", (32, 64))
def test_gradients_reach_every_parameter(resolution):
    G, D = _build(resolution)
    fake = G(_z(2, G.cfg))
    logits, rec = D(fake, reconstruct=True)
    loss = logits.mean() + (rec["whole"] - rec["whole_target"]).abs().mean()
    loss = loss + (rec["part"] - rec["part_target"]).abs().mean()
    loss.backward()
    missing = [n for m in (G, D) for n, p in m.named_parameters() if p.grad is None]
    assert missing == []


def test_channels_last_matches_contiguous():
    G, D = _build(64)
    G.eval(), D.eval()
    z = _z(2, G.cfg)
    x = G(z)
    logits = D(x)
    G.to(memory_format=torch.channels_last)
    D.to(memory_format=torch.channels_last)
    x_cl = G(z)
    torch.testing.assert_close(x_cl, x, atol=1e-5, rtol=1e-4)
    logits_cl = D(x_cl.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(logits_cl, logits, atol=1e-4, rtol=1e-4)


def test_bf16_autocast_forward_backward_is_finite():
    G, D = _build(32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fake = G(_z(2, G.cfg))
        logits, rec = D(fake, reconstruct=True)
        loss = logits.float().mean() + (rec["whole"].float() - rec["whole_target"]).abs().mean()
    assert logits.dtype == torch.bfloat16  # autocast really ran the convs in bf16
    assert torch.isfinite(fake).all() and torch.isfinite(logits).all()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in G.parameters() if p.grad is not None)
