"""Cost of GBI against a plain forward+backward pass of the same model on the same batch.

One-step GBI is one forward and one backward pass (to z instead of the weights); iterative GBI
costs that per step; exhaustive likelihood costs C forward passes.
"""

from __future__ import annotations

import torch

from common import interleaved, report
from taskabs import inference
from taskabs.models.sequence import SequenceModelConfig, TaskConditionedLSTM

BATCH, WINDOW, TASKS, ITER_STEPS = 4096, 8, 2, 10


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = TaskConditionedLSTM(SequenceModelConfig(n_tasks=TASKS))
    x = torch.rand(BATCH, WINDOW, 1)
    z0 = inference.uniform_z(BATCH, TASKS)

    def forward_backward():  # what training pays per batch: gradients for the weights
        model.zero_grad(set_to_none=True)
        model.loss_per_example(x, z0).sum().backward()

    for p in model.parameters():  # inference: weights frozen
        p.requires_grad_(False)
    loss_fn = lambda z: model.loss_per_example(x, z)

    def plain_forward_backward():
        for p in model.parameters():
            p.requires_grad_(True)
        forward_backward()
        for p in model.parameters():
            p.requires_grad_(False)

    medians = interleaved(
        {
            "forward + backward (weights)": plain_forward_backward,
            "one-step GBI": lambda: inference.one_step(loss_fn, BATCH, TASKS),
            f"iterative GBI / step ({ITER_STEPS} steps)": lambda: inference.iterative(
                loss_fn, BATCH, TASKS, steps=ITER_STEPS, lr=0.3
            ),
            f"exhaustive likelihood (C={TASKS})": lambda: inference.exhaustive(loss_fn, BATCH, TASKS),
        },
        repeats=7,
    )
    medians[f"iterative GBI / step ({ITER_STEPS} steps)"] /= ITER_STEPS + 1  # + the final evaluation
    report(
        f"GBI cost, GBI-LSTM, batch {BATCH} x {WINDOW} trials, 1 thread",
        medians,
        "forward + backward (weights)",
    )


if __name__ == "__main__":
    main()
