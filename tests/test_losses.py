import torch

from cdvideo.math.losses import diffusion_target, masked_mse, semantic_preservation_loss, velocity


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
