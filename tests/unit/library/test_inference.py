import torch

from taskabs import inference
from taskabs.models.sequence import SequenceModelConfig, TaskConditionedLSTM


def frozen_lstm(seed=0, n_tasks=3):
    torch.manual_seed(seed)
    model = TaskConditionedLSTM(SequenceModelConfig(obs_dim=2, n_tasks=n_tasks, hidden=8))
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def test_one_step_equals_per_example_gradients():
    model = frozen_lstm()
    x = torch.randn(5, 7, 2)
    g = inference.one_step(lambda z: model.loss_per_example(x, z), 5, 3)
    for b in range(5):
        z = torch.full((1, 3), 1 / 3, requires_grad=True)
        (expected,) = torch.autograd.grad(model.loss_per_example(x[b : b + 1], z).sum(), z)
        torch.testing.assert_close(g[b], expected[0])


def test_one_step_on_a_linear_gaussian_model_is_the_log_likelihood_direction():
    # x_hat = M z, L = ||x - M z||^2: -dL/dz at z0 = 2 M^T (x - M z0), whose argmax is the closest
    # column of M when columns have equal norms: the maximum-likelihood task.
    M = torch.eye(4) * 2.0
    x = M[:, [2, 0, 3]].T + 0.1 * torch.randn(3, 4)

    def loss_fn(z):
        return ((x - z @ M.T) ** 2).sum(1)

    g = inference.one_step(loss_fn, 3, 4)
    torch.testing.assert_close(-g, 2 * (x - inference.uniform_z(3, 4) @ M.T) @ M)
    assert g.argmin(1).tolist() == [2, 0, 3]


def test_exhaustive_scores_every_one_hot_z():
    model = frozen_lstm()
    x = torch.randn(4, 6, 2)
    losses = inference.exhaustive(lambda z: model.loss_per_example(x, z), 4, 3)
    for c in range(3):
        z = torch.zeros(4, 3)
        z[:, c] = 1
        torch.testing.assert_close(losses[:, c], model.loss_per_example(x, z))


def test_iterative_lowers_each_examples_loss_and_examples_do_not_interact():
    model = frozen_lstm()
    x = torch.randn(6, 5, 2)
    result = inference.iterative(lambda z: model.loss_per_example(x, z), 6, 3, steps=30, lr=0.1)
    assert torch.all(result.loss_trace[-1] <= result.loss_trace[0] + 1e-7)
    torch.testing.assert_close(result.z.sum(1), torch.ones(6))
    alone = inference.iterative(lambda z: model.loss_per_example(x[:1], z), 1, 3, steps=30, lr=0.1)
    torch.testing.assert_close(alone.z[0], result.z[0])


def test_free_z_can_leave_the_simplex():
    # target needs z = (-0.5, 1.5): only reachable without the softmax
    def loss_fn(z):
        return (z @ torch.tensor([0.0, 1.0]) - 1.5) ** 2 + (z.sum(1) - 1.0) ** 2

    free = inference.iterative(loss_fn, 1, 2, steps=500, lr=0.05, simplex=False)
    assert free.loss_trace[-1].item() < 1e-3
    boxed = inference.iterative(loss_fn, 1, 2, steps=500, lr=0.05, simplex=True)
    assert boxed.loss_trace[-1].item() > 0.2
