"""The baseline networks (DCGAN, the DCGAN-shaped WGAN-GP critic, the residual WGAN-GP pair) on tiny
configs: shapes, range, determinism, state round trip, and the reference shapes at 64 px."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lowshot.models import dcgan, resnet_gan

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: threads only add contention

RESOLUTIONS = (32, 64, 128)
TINY = {
    "dcgan": lambda r: dcgan.DCGANConfig.tiny(r),
    "wgan-gp": lambda r: dcgan.DCGANConfig.tiny(r, d_norm="layer"),
    "resnet-wgan-gp": resnet_gan.ResNetGANConfig.tiny,
}
MODULES = {"dcgan": dcgan, "wgan-gp": dcgan, "resnet-wgan-gp": resnet_gan}


def build(arch: str, resolution: int = 32, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    cfg = TINY[arch](resolution)
    return MODULES[arch].Generator(cfg), MODULES[arch].Discriminator(cfg)


def z(arch: str, n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, TINY[arch](32).z_dim, generator=torch.Generator().manual_seed(seed))


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("arch", list(TINY))
@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_shapes_range_and_gradient_flow(arch, resolution):
    G, D = build(arch, resolution)
    x = G(z(arch, 3))
    assert x.shape == (3, 3, resolution, resolution) and x.min() >= -1 and x.max() <= 1
    logits = D(x)
    assert logits.shape == (3,) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in [*G.parameters(), *D.parameters()])
    with pytest.raises(ValueError, match=r"z of shape"):
        G(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"images of shape"):
        D(torch.randn(2, 3, resolution // 2, resolution // 2))


@pytest.mark.parametrize("arch", list(TINY))
def test_same_seed_same_networks_and_eval_mode_is_deterministic(arch):
    G1, D1 = build(arch, seed=3)
    G2, D2 = build(arch, seed=3)
    G3, _ = build(arch, seed=4)
    G1.eval(), G2.eval(), G3.eval()
    images = G1(z(arch, 4))
    assert torch.equal(images, G2(z(arch, 4))) and torch.equal(images, G1(z(arch, 4)))
    assert not torch.allclose(images, G3(z(arch, 4)))
    assert torch.equal(D1(images), D2(images))
    assert not torch.allclose(images[0], images[1])  # z matters


@pytest.mark.parametrize("arch", list(TINY))
def test_state_dict_and_config_round_trip_rebuild_identical_networks(arch):
    G, D = build(arch, 64, seed=0)
    G.train()(z(arch, 4))  # move the batch-norm running statistics away from their initial values
    cfg = G.cfg
    module = MODULES[arch]
    again_cfg = type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again_cfg == cfg
    torch.manual_seed(99)
    G2, D2 = module.Generator(again_cfg), module.Discriminator(again_cfg)
    G2.load_state_dict(G.state_dict())
    D2.load_state_dict(D.state_dict())
    G.eval(), G2.eval()
    images = G(z(arch, 2))
    assert torch.equal(images, G2(z(arch, 2))) and torch.equal(D(images), D2(images))


def test_configs_reject_bad_values_and_unknown_keys():
    with pytest.raises(ValueError, match="resolution must be one of"):
        dcgan.DCGANConfig(resolution=256)
    with pytest.raises(ValueError, match="d_norm"):
        dcgan.DCGANConfig(d_norm="instance")
    with pytest.raises(ValueError, match="ngf must be a positive integer"):
        dcgan.DCGANConfig(ngf=0)
    with pytest.raises(ValueError, match="unknown DCGANConfig keys"):
        dcgan.DCGANConfig.from_dict({"resolution": 64, "nz": 100})
    with pytest.raises(ValueError, match="resolution must be one of"):
        resnet_gan.ResNetGANConfig(resolution=16)
    with pytest.raises(ValueError, match="unknown ResNetGANConfig keys"):
        resnet_gan.ResNetGANConfig.from_dict({"dim": 8, "depth": 3})


def test_dcgan_at_64px_has_the_reference_networks_parameter_counts():
    # pytorch/examples dcgan (nz 100, ngf = ndf = 64): netG 3,576,704 and netD 2,765,568 parameters.
    cfg = dcgan.DCGANConfig()
    G, D = dcgan.Generator(cfg), dcgan.Discriminator(cfg)
    assert (n_params(G), n_params(D)) == (3_576_704, 2_765_568)
    convs = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels) for m in convs] == [(100, 512), (512, 256), (256, 128), (128, 64),
                                                                (64, 3)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert abs(weights.std().item() - 0.02) < 0.001  # N(0, 0.02) initialisation


def test_critics_have_no_batch_norm_and_dcgan_discriminator_has():
    def norms(D: nn.Module) -> set[type]:
        return {type(m) for m in D.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))}

    assert norms(dcgan.Discriminator(dcgan.DCGANConfig.tiny(64))) == {nn.BatchNorm2d}
    assert norms(dcgan.Discriminator(dcgan.DCGANConfig.tiny(64, d_norm="layer"))) == {nn.GroupNorm}
    assert norms(dcgan.Discriminator(dcgan.DCGANConfig.tiny(64, d_norm="none"))) == set()
    assert norms(resnet_gan.Discriminator(resnet_gan.ResNetGANConfig.tiny(64))) == {nn.GroupNorm}
    # A critic's value for one image does not depend on the rest of the batch (the penalty is per sample).
    for critic in (dcgan.Discriminator(dcgan.DCGANConfig.tiny(32, d_norm="layer")),
                   resnet_gan.Discriminator(resnet_gan.ResNetGANConfig.tiny(32))):
        x = torch.randn(4, 3, 32, 32)
        torch.testing.assert_close(critic(x)[:1], critic(x[:1]))


def test_resnet_at_64px_has_the_reference_block_widths():
    # gan_64x64.py GoodGenerator / GoodDiscriminator, dim 64: G 8d->8d->4d->2d->d, D d->2d->4d->8d->8d.
    cfg = resnet_gan.ResNetGANConfig()
    G, D = resnet_gan.Generator(cfg), resnet_gan.Discriminator(cfg)
    assert G.input.out_features == 4 * 4 * 512 and D.out.in_features == 4 * 4 * 512
    assert [(b.conv1.in_channels, b.conv2.out_channels) for b in G.blocks] == [(512, 512), (512, 256), (256, 128),
                                                                               (128, 64)]
    assert [(b.conv1.in_channels, b.conv2.out_channels) for b in D.blocks] == [(64, 128), (128, 256), (256, 512),
                                                                               (512, 512)]
    assert cfg.z_dim == 128 and D.input.in_channels == 3 and G.out.out_channels == 3
