import pytest
import torch

from cdvideo.math.losses import (diffusion_target, masked_mse, min_snr_weight, semantic_preservation_loss,
                                 signal_to_noise, velocity)


def test_spl_identical_orthogonal_opposite():
    a = torch.tensor([[1.0, 0.0, 0.0]])
    assert semantic_preservation_loss(a, a).item() == 0.0
    assert semantic_preservation_loss(a, torch.tensor([[0.0, 2.0, 0.0]])).item() == 1.0
    assert semantic_preservation_loss(a, -3 * a).item() == 2.0


def test_spl_averages_over_concepts():
    personal = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    cls = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # losses 0 and 1
    assert semantic_preservation_loss(personal, cls).item() == 0.5


def test_masked_mse_hand_computed():
    pred = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 4.0]]]])
    full = torch.ones(1, 1, 2, 2)
    assert masked_mse(pred, target, full).item() == (1 + 4 + 9 + 16) * 2 / 8
    corner = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # only the masked cell counts, in both channels: denominator 2, not 8
    assert masked_mse(pred, target, corner).item() == 1.0
    half = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
    assert masked_mse(pred, target, half).item() == (4 + 16) * 2 / 4


def test_masked_mse_averages_per_sample():
    pred = torch.zeros(2, 1, 1, 2)
    target = torch.tensor([[[[2.0, 0.0]]], [[[1.0, 1.0]]]])
    mask = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 1.0]]]])
    assert masked_mse(pred, target, mask).item() == (4.0 + 1.0) / 2


def test_targets_follow_prediction_type():
    x0, noise = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    acs = torch.linspace(0.99, 0.01, 1000)
    t = torch.tensor([0, 999])
    assert torch.equal(diffusion_target("epsilon", x0, noise, acs, t), noise)
    assert torch.equal(diffusion_target("sample", x0, noise, acs, t), x0)
    v = velocity(x0, noise, acs, t)
    expected0 = acs[0].sqrt() * noise[0] - (1 - acs[0]).sqrt() * x0[0]
    assert torch.allclose(v[0], expected0, atol=1e-6)
    from diffusers import DDPMScheduler
    sched = DDPMScheduler(prediction_type="v_prediction")
    assert torch.allclose(diffusion_target("v_prediction", x0, noise, sched.alphas_cumprod, t),
                          sched.get_velocity(x0, noise, t), atol=1e-5)


def test_min_snr_weights_one_x0_error_alike_in_every_parameterisation():
    """Min-SNR-gamma (Hang et al. 2023) weighs an x0 error by min(SNR, gamma) whichever the UNet predicts: one
    prediction of x0, written as epsilon, v or x0 from the same noised latent, gives one weighted loss; unweighted,
    epsilon's loss is SNR times x0's. Where SNR is below gamma an epsilon loss keeps its weight 1 (at zero SNR too)."""
    gen = torch.Generator().manual_seed(0)
    acs = torch.cumprod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2, 0)  # SD1.5's scaled_linear
    t = torch.tensor([0, 60, 150, 400, 999])
    x0, noise, guess = (torch.randn(5, 4, 3, 3, generator=gen) for _ in range(3))  # guess: a predicted x0
    a = acs[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    eps_hat = (x_t - a.sqrt() * guess) / (1 - a).sqrt()  # the same prediction in each parameterisation
    as_predicted = {"epsilon": eps_hat, "sample": guess, "v_prediction": a.sqrt() * eps_hat - (1 - a).sqrt() * guess}
    snr, mask = signal_to_noise(acs, t), torch.ones(5, 1, 3, 3)
    for gamma in (5.0, 1.0):
        losses = {k: masked_mse(pred, diffusion_target(k, x0, noise, acs, t), mask, min_snr_weight(snr, gamma, k))
                  for k, pred in as_predicted.items()}
        assert losses["epsilon"].item() == pytest.approx(losses["sample"].item(), rel=1e-4), losses
        assert losses["v_prediction"].item() == pytest.approx(losses["sample"].item(), rel=1e-4), losses
    plain = {k: masked_mse(p[:1], diffusion_target(k, x0, noise, acs, t)[:1], mask[:1])
             for k, p in as_predicted.items()}  # t = 0 alone, unweighted
    assert plain["epsilon"].item() == pytest.approx(snr[0].item() * plain["sample"].item(), rel=1e-3)
    w = min_snr_weight(snr, 5.0, "epsilon")
    assert w[0] == pytest.approx(5.0 / snr[0].item()) and w[0] < 0.01 and w[1] < 1 and (w[2:] == 1).all()
    assert min_snr_weight(torch.zeros(1), 5.0, "epsilon").item() == 1.0  # a zero-terminal-SNR schedule's last step
