"""Image models: the loss GBI differentiates, closed forms, and that the decoder uses z."""

import math

import pytest
import torch
import torch.nn.functional as F

from taskabs.models.image import (
    ClassifierConfig,
    ConditionalAutoencoder,
    ConditionalAutoencoderConfig,
    MLPClassifier,
    count_parameters,
)

C = 10


def _model(**overrides):
    torch.manual_seed(0)
    return ConditionalAutoencoder(ConditionalAutoencoderConfig(**overrides), device="cpu").eval()


def test_loss_is_per_example_and_differentiable_in_z():
    model = _model()
    x = torch.rand(5, 28, 28)
    z = torch.full((5, C), 1.0 / C, requires_grad=True)
    loss = model.loss(x, z)
    assert loss.shape == (5,)
    (g,) = torch.autograd.grad(loss.sum(), z)
    assert g.shape == (5, C) and torch.isfinite(g).all() and g.abs().sum() > 0
    # flattened images give the same loss; eval mode is deterministic
    torch.testing.assert_close(model.loss(x.flatten(1), z), loss)
    torch.testing.assert_close(model.loss(x, z), loss)


def test_per_example_gradient_is_independent_of_the_batch():
    model = _model()
    x = torch.rand(4, 28, 28)
    z = torch.full((4, C), 1.0 / C, requires_grad=True)
    (g_batch,) = torch.autograd.grad(model.loss(x, z).sum(), z)
    z1 = torch.full((1, C), 1.0 / C, requires_grad=True)
    (g_one,) = torch.autograd.grad(model.loss(x[2:3], z1).sum(), z1)
    torch.testing.assert_close(g_batch[2:3], g_one)


@pytest.mark.parametrize("loss", ["bce", "mse", "gaussian"])
def test_loss_closed_form_at_zero_logits(loss):
    model = _model(loss=loss, kl_weight=0.0)
    torch.nn.init.zeros_(model.decoder[-1].weight)
    torch.nn.init.zeros_(model.decoder[-1].bias)  # logits 0 -> every pixel predicted 0.5 (gaussian: 0)
    x = torch.rand(3, 28, 28)
    z = F.one_hot(torch.tensor([0, 1, 2]), C).float()
    expected = {
        "bce": torch.full((3,), 784 * math.log(2)),
        "mse": (x.flatten(1) - 0.5).square().sum(1),
        "gaussian": 0.5 * x.flatten(1).square().sum(1),
    }[loss]
    torch.testing.assert_close(model.loss(x, z), expected)
    reconstruction = model(x, z)
    assert torch.allclose(
        reconstruction, torch.zeros_like(reconstruction) + (0.0 if loss == "gaussian" else 0.5)
    )
    with pytest.raises(ValueError, match="gaussian"):
        _model(loss="laplace")


def test_loss_from_code_matches_loss_for_each_one_hot_class():
    model = _model()
    x = torch.rand(6, 28, 28)
    h = model.encode(x)
    for c in range(C):
        z = F.one_hot(torch.full((6,), c), C).float()
        torch.testing.assert_close(model.loss_from_code(x, h, z), model.loss(x, z))


def test_variational_training_loss_is_reconstruction_plus_beta_kl():
    model = _model(kl_weight=2.0)
    x, y = torch.rand(4, 28, 28), torch.tensor([1, 2, 3, 4])
    mu, logvar = model.encode_stats(x)
    kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1)
    expected = (model.loss(x, F.one_hot(y, C).float()) + 2.0 * kl).mean()
    torch.testing.assert_close(model.training_loss(x, y), expected)  # eval mode: h = mu
    model.train()
    torch.manual_seed(1)
    a = model.training_loss(x, y)
    torch.manual_seed(2)
    assert a != model.training_loss(x, y)  # training samples the code


def test_same_seed_same_model_and_comparable_parameter_counts():
    a, b = _model(), _model()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)
    clf = MLPClassifier(ClassifierConfig(), device="cpu")
    n_gen, n_clf = count_parameters(a), count_parameters(clf)
    assert abs(n_gen - n_clf) / n_clf < 0.05
    assert next(a.parameters()).device.type == "cpu"


def test_classifier_logits_and_loss():
    torch.manual_seed(0)
    clf = MLPClassifier(ClassifierConfig())
    x, y = torch.rand(3, 28, 28), torch.tensor([0, 5, 9])
    logits = clf(x)
    assert logits.shape == (3, C)
    torch.testing.assert_close(clf.training_loss(x, y), F.cross_entropy(logits, y))


def _prototype_data(n_per_class, generator):
    """Each class is a fixed random pixel pattern; samples vary its contrast and add noise."""
    protos = (torch.rand(C, 28, 28, generator=generator) < 0.3).float()
    y = torch.arange(C).repeat_interleave(n_per_class)
    contrast = 0.5 + 0.5 * torch.rand(len(y), 1, 1, generator=generator)
    noise = 0.1 * torch.rand(len(y), 28, 28, generator=generator)
    return (protos[y] * contrast + noise).clamp(0, 1), y


@pytest.fixture
def one_thread():
    """Tiny models train fastest (and with stable timing on a busy machine) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_one_step_gbi_recovers_classes_the_decoder_learned(one_thread):
    """After training p(x|z), argmin_c dL/dz_c at z = 1/C identifies the class."""
    gen = torch.Generator().manual_seed(0)
    x, y = _prototype_data(30, gen)
    model = _model(hidden=64, bottleneck=2)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(10):
        for idx in torch.randperm(len(y), generator=gen).split(50):
            loss = model.training_loss(x[idx], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    x_test, y_test = x[::3], y[::3]
    z = torch.full((len(y_test), C), 1.0 / C, requires_grad=True)
    (g,) = torch.autograd.grad(model.loss(x_test, z).sum(), z)
    assert (g.argmin(1) == y_test).float().mean() > 0.9
