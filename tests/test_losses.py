"""GAN losses and regularisers against hand-computed values and analytic gradients."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lowshot.train import losses
from lowshot.models.dcgan import DCGANConfig, Discriminator as DCGANDiscriminator
from lowshot.models.resnet_gan import Discriminator as ResNetCritic, ResNetGANConfig
from lowshot.train.losses import (
    PathLengthPenalty,
    critic_margin,
    d_hinge,
    d_logistic,
    d_wasserstein,
    g_hinge,
    g_nonsaturating,
    gan_loss,
    gradient_penalty,
    interpolates,
    lazy_reg_adam_params,
    r1_penalty,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: threads only add contention


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_hinge_losses_on_hand_computed_logits():
    real, fake = torch.tensor([2.0, -2.0]), torch.tensor([-2.0, 2.0])
    # real: relu(1-2)=0, relu(1+2)=3 -> 1.5; fake: relu(1-2)=0, relu(1+2)=3 -> 1.5
    assert d_hinge(real, fake).item() == pytest.approx(3.0)
    assert d_hinge(torch.tensor([1.5]), torch.tensor([-1.5])).item() == pytest.approx(0.0)
    assert g_hinge(fake).item() == pytest.approx(0.0)
    assert g_hinge(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)


def test_logistic_losses_on_hand_computed_logits():
    real, fake = torch.tensor([1.5, -0.5]), torch.tensor([0.0, 2.0])
    expected_d = (_softplus(-1.5) + _softplus(0.5)) / 2 + (_softplus(0.0) + _softplus(2.0)) / 2
    assert d_logistic(real, fake).item() == pytest.approx(expected_d, rel=1e-6)
    assert g_nonsaturating(torch.tensor([0.0])).item() == pytest.approx(math.log(2.0))
    assert g_nonsaturating(fake).item() == pytest.approx((_softplus(0.0) + _softplus(-2.0)) / 2, rel=1e-6)


def test_gan_loss_matches_each_formula():
    x = torch.tensor([0.5, 2.0])
    assert gan_loss("lsgan", x, True).item() == pytest.approx((0.25 + 1.0) / 2)
    assert gan_loss("lsgan", x, False).item() == pytest.approx((0.25 + 4.0) / 2)
    assert gan_loss("lsgan", x, True, for_discriminator=False).item() == pytest.approx(0.625)
    assert gan_loss("vanilla", x, True).item() == pytest.approx((_softplus(-0.5) + _softplus(-2.0)) / 2, rel=1e-6)
    assert gan_loss("vanilla", x, False).item() == pytest.approx((_softplus(0.5) + _softplus(2.0)) / 2, rel=1e-6)
    assert gan_loss("vanilla", x, True, for_discriminator=False).item() == pytest.approx(g_nonsaturating(x).item())
    assert gan_loss("hinge", x, True).item() == pytest.approx((0.5 + 0.0) / 2)
    assert gan_loss("hinge", x, False).item() == pytest.approx((1.5 + 3.0) / 2)
    assert gan_loss("hinge", x, True, for_discriminator=False).item() == pytest.approx(-1.25)
    # patch logits (CycleGAN's PatchGAN) average over every element
    patches = torch.zeros(2, 1, 3, 3)
    assert gan_loss("lsgan", patches, True).item() == pytest.approx(1.0)


def test_gan_loss_rejects_unknown_kind_and_fake_hinge_for_generator():
    with pytest.raises(ValueError, match="wgan"):
        gan_loss("wgan", torch.zeros(2), True)
    with pytest.raises(ValueError, match="target_is_real"):
        gan_loss("hinge", torch.zeros(2), False, for_discriminator=False)


def test_r1_of_a_linear_discriminator_is_the_squared_weight_norm():
    torch.manual_seed(0)
    a = torch.randn(3, 4, 4, requires_grad=True)
    reals = torch.randn(5, 3, 4, 4).requires_grad_(True)
    logits = (reals * a).sum(dim=(1, 2, 3)) + 0.3  # D(x) = <a, x> + b, so dD/dx = a
    penalty = r1_penalty(reals, logits)
    assert penalty.shape == (5,)
    torch.testing.assert_close(penalty, a.detach().square().sum().expand(5))
    # differentiable w.r.t. D's parameters: d(sum_i |a|^2)/da = 2 * 5 * a
    penalty.sum().backward()
    torch.testing.assert_close(a.grad, 10 * a.detach())


def test_r1_of_a_quadratic_discriminator():
    reals = torch.tensor([[[[1.0, 2.0]]], [[[0.0, -3.0]]]], requires_grad=True)
    logits = reals.square().sum(dim=(1, 2, 3))  # grad 2x -> |2x|^2
    torch.testing.assert_close(r1_penalty(reals, logits), torch.tensor([20.0, 36.0]))


def test_r1_requires_grad_on_reals():
    reals = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(reals, reals.sum(dim=(1, 2, 3)))


def _linear_generator(n: int, num_ws: int = 3, w_dim: int = 4, side: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(3 * side * side, num_ws * w_dim, generator=g, requires_grad=True)
    ws = torch.randn(n, num_ws, w_dim, generator=g, requires_grad=True)
    images = (ws.reshape(n, -1) @ a.t()).reshape(n, 3, side, side)
    return a, ws, images


def test_path_length_penalty_lengths_and_running_mean():
    n, num_ws, w_dim, side = 4, 3, 4, 4
    pl = PathLengthPenalty()
    assert float(pl.pl_mean) == 0.0
    a, ws, images = _linear_generator(n, num_ws, w_dim, side)
    penalty = pl(images, ws, generator=torch.Generator().manual_seed(7))

    # by hand: J^T y = A^T y for y ~ N(0, I) / sqrt(H*W), the same draw
    y = torch.randn(images.shape, generator=torch.Generator().manual_seed(7)) / side
    grads = (y.reshape(n, -1) @ a.detach()).reshape(n, num_ws, w_dim)
    lengths = grads.square().sum(2).mean(1).sqrt()
    mean1 = 0.01 * lengths.mean()  # lerp from 0 with decay 0.01
    assert float(pl.pl_mean) == pytest.approx(mean1.item(), rel=1e-5)
    torch.testing.assert_close(penalty, (lengths - mean1).square(), rtol=1e-5, atol=1e-6)

    # second step: pl_mean <- pl_mean + 0.01 * (mean lengths - pl_mean)
    _, ws2, images2 = _linear_generator(n, num_ws, w_dim, side, seed=1)
    pl(images2, ws2)
    # the penalty backpropagates into the generator's parameters
    penalty.sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    assert float(pl.pl_mean) != pytest.approx(mean1.item())


def test_path_length_state_round_trip():
    pl = PathLengthPenalty()
    _, ws, images = _linear_generator(2)
    pl(images, ws)
    state = json.loads(json.dumps(pl.state_dict()))
    resumed = PathLengthPenalty()
    resumed.load_state_dict(state)
    assert float(resumed.pl_mean) == pytest.approx(float(pl.pl_mean))
    _, ws2, images2 = _linear_generator(2, seed=5)
    a = pl(images2, ws2, generator=torch.Generator().manual_seed(0))
    b = resumed(images2, ws2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    assert float(resumed.pl_mean) == pytest.approx(float(pl.pl_mean))


def test_lazy_regularisation_adam_correction():
    # StyleGAN2: R1 every 16 D steps -> ratio 16/17; path length every 4 G steps -> ratio 4/5
    lr, betas = lazy_reg_adam_params(0.0025, (0.0, 0.99), 16)
    assert lr == pytest.approx(0.0025 * 16 / 17)
    assert betas == pytest.approx((0.0, 0.990585), abs=1e-6)
    lr, betas = lazy_reg_adam_params(0.002, (0.5, 0.99), 4)
    assert lr == pytest.approx(0.0016)
    assert betas == pytest.approx((0.574349, 0.991992), abs=1e-6)
    assert lazy_reg_adam_params(0.002, (0.0, 0.99), None) == (0.002, (0.0, 0.99))
    with pytest.raises(ValueError, match="interval"):
        lazy_reg_adam_params(0.002, (0.0, 0.99), 0)


def test_patch_nce_equals_a_brute_force_infonce():
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(2, 5, 4), dim=-1).requires_grad_(True)
    k = torch.nn.functional.normalize(torch.randn(2, 5, 4), dim=-1).requires_grad_(True)
    t = 0.07
    brute = []
    for n in range(2):
        for i in range(5):
            pos = torch.exp(q[n, i] @ k[n, i] / t)
            neg = sum(torch.exp(q[n, i] @ k[n, j] / t) for j in range(5) if j != i)
            brute.append(-torch.log(pos / (pos + neg)))
    expected = torch.stack(brute).mean()
    loss = losses.patch_nce_loss(q, k, t)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert q.grad is not None and k.grad is None  # keys carry no gradient, as the reference detaches them
    # Matching features at matching positions score far lower than shuffled ones.
    assert losses.patch_nce_loss(k.detach(), k.detach()) < losses.patch_nce_loss(k.detach().flip(1), k.detach())
    with pytest.raises(ValueError, match="one shape"):
        losses.patch_nce_loss(q, k[:, :4])
# --- WGAN-GP --------------------------------------------------------------------------------------


def test_wasserstein_critic_loss_and_margin_on_hand_computed_values():
    real, fake = torch.tensor([2.0, 4.0]), torch.tensor([-1.0, 1.0, 3.0])
    assert d_wasserstein(real, fake).item() == pytest.approx(1.0 - 3.0)
    # midpoint of the means (3 and 1) is 2: reals sit at 0 and +2 from it, whatever the critic's offset
    torch.testing.assert_close(critic_margin(real, fake), torch.tensor([0.0, 2.0]))
    torch.testing.assert_close(critic_margin(real + 50, fake + 50), torch.tensor([0.0, 2.0]))


def test_interpolates_lie_on_the_segments_with_one_weight_per_sample():
    real, fake = torch.zeros(3, 2, 4, 4), torch.ones(3, 2, 4, 4)
    x_hat = interpolates(real, fake, torch.Generator().manual_seed(0))
    assert x_hat.requires_grad and x_hat.is_leaf
    alpha = x_hat[:, 0, 0, 0]
    assert ((alpha >= 0) & (alpha < 1)).all() and len(set(alpha.tolist())) == 3
    torch.testing.assert_close(x_hat.detach(), alpha.view(3, 1, 1, 1).expand(3, 2, 4, 4))
    again = interpolates(real, fake, torch.Generator().manual_seed(0))
    assert torch.equal(again, x_hat)  # the draw comes from the generator alone


def test_gradient_penalty_of_a_linear_critic_is_the_squared_distance_of_its_weight_norm_from_one():
    torch.manual_seed(0)
    a = torch.randn(3, 4, 4, requires_grad=True)
    x_hat = torch.randn(5, 3, 4, 4, requires_grad=True)
    penalty = gradient_penalty(x_hat, (x_hat * a).sum(dim=(1, 2, 3)) - 7.0)  # grad = a everywhere
    expected = (a.detach().norm() - 1).square()
    torch.testing.assert_close(penalty, expected.expand(5))
    penalty.mean().backward()  # d/da (|a| - 1)^2 = 2 (|a| - 1) a / |a|
    torch.testing.assert_close(a.grad, 2 * (a.detach().norm() - 1) * a.detach() / a.detach().norm())
    with pytest.raises(ValueError, match="requires_grad"):
        gradient_penalty(x_hat.detach(), x_hat.detach().sum(dim=(1, 2, 3)))


@pytest.mark.parametrize("critic", ["dcgan-layer-norm", "resnet"])
def test_gradient_penalty_equals_a_brute_force_per_sample_autograd_computation(critic):
    torch.manual_seed(0)
    D = DCGANDiscriminator(DCGANConfig.tiny(32, d_norm="layer")) if critic == "dcgan-layer-norm" \
        else ResNetCritic(ResNetGANConfig.tiny(32))
    real, fake = torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1
    x_hat = interpolates(real, fake, torch.Generator().manual_seed(1))
    ours = gradient_penalty(x_hat, D(x_hat))
    (ours_grads,) = torch.autograd.grad(10 * ours.mean(), [next(D.parameters())])

    # Brute force: each sample alone through D, its own input gradient, its norm, from the definition.
    per_sample = []
    for x in x_hat.detach():
        x = x[None].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
        per_sample.append((g.flatten().square().sum().sqrt() - 1) ** 2)
    brute = torch.stack(per_sample)
    (brute_grads,) = torch.autograd.grad(10 * brute.mean(), [next(D.parameters())])
    assert ours.shape == (4,) and (ours > 0).all()
    torch.testing.assert_close(ours, brute, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours_grads, brute_grads, rtol=1e-4, atol=1e-7)  # the double backward too


def test_gradient_penalty_per_pixel_takes_the_norm_over_channels_at_each_pixel():
    # SinGAN's patch critic: a linear per-pixel critic with weights w has gradient w at every input;
    # pixel 0 has channel norm 5, pixel 1 norm 1: the penalty is the mean of (5 - 1)^2 and (1 - 1)^2.
    w = torch.nn.Parameter(torch.tensor([[[[3.0, 0.0]], [[4.0, 1.0]]]]))  # (1, C=2, H=1, W=2)
    x_hat = interpolates(torch.randn(3, 2, 1, 2), torch.randn(3, 2, 1, 2), torch.Generator().manual_seed(0))
    per_pixel = gradient_penalty(x_hat, (x_hat * w).sum(dim=1, keepdim=True), per_pixel=True)
    torch.testing.assert_close(per_pixel, torch.full((3,), ((5 - 1) ** 2 + (1 - 1) ** 2) / 2))
    per_pixel.mean().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0  # differentiable in the critic's weights
    whole = gradient_penalty(x_hat, (x_hat * w).sum(dim=(1, 2, 3)))
    torch.testing.assert_close(whole, torch.full((3,), (math.sqrt(9 + 16 + 1) - 1) ** 2))


def test_colour_anchor_sees_colour_and_light_but_not_texture_finer_than_its_blocks():
    photo = torch.rand(2, 3, 16, 16) * 1.6 - 0.8
    checker = 0.2 * (torch.arange(16)[:, None] + torch.arange(16)[None, :]).remainder(2).mul(2).sub(1)
    assert losses.colour_anchor(photo + checker, photo, 8).item() == pytest.approx(0, abs=1e-6)
    assert losses.colour_anchor(photo + checker, photo, 1).item() == pytest.approx(0.2)
    assert losses.colour_anchor(photo + 0.1, photo, 8).item() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="pool must be >= 1"):
        losses.colour_anchor(photo, photo, 0)
