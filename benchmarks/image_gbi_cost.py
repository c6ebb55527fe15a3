"""Cost of GBI on the image model: one-step GBI against a plain forward+backward pass of the same
network and batch, and against exhaustive likelihood (C forward passes) at C = 10 and C = 100.

One-step GBI is one forward pass and one backward pass to z; the backward pass stops at the
decoder's input (weights frozen, the image code does not depend on z), so it is at most as costly
as training's backward pass to the weights. Exhaustive likelihood is timed two ways: naive (C
full forward passes, ``model.loss``) and as the experiment runs it (the image code computed once,
then C decoder passes, ``model.loss_from_code``); the second is the fairer, harder baseline.
Targets: one-step <= 1.3x forward+backward; exhaustive >= 3x (C = 10) and >= 25x (C = 100) one-step.
"""

from __future__ import annotations

import torch

from common import interleaved, report
from taskabs import inference
from taskabs.models.image import ConditionalAutoencoder, ConditionalAutoencoderConfig

BATCH, ITER_STEPS, REPEATS = 1000, 10, 9


def candidates(n_classes: int) -> dict:
    torch.manual_seed(0)
    model = ConditionalAutoencoder(ConditionalAutoencoderConfig(n_classes=n_classes)).eval()
    x = torch.rand(BATCH, 28 * 28)
    z0 = inference.uniform_z(BATCH, n_classes)

    def forward_backward():  # what training pays per batch: gradients for the weights
        for p in model.parameters():
            p.requires_grad_(True)
        model.zero_grad(set_to_none=True)
        model.loss(x, z0).sum().backward()
        for p in model.parameters():  # inference: weights frozen
            p.requires_grad_(False)

    def loss_fn(z):
        return model.loss(x, z)

    def exhaustive_cached():
        with torch.no_grad():
            h = model.encode(x)
        return inference.exhaustive(lambda z: model.loss_from_code(x, h, z), BATCH, n_classes)

    for p in model.parameters():
        p.requires_grad_(False)
    return {
        "forward + backward (weights)": forward_backward,
        "one-step GBI": lambda: inference.one_step(loss_fn, BATCH, n_classes),
        f"iterative GBI / step ({ITER_STEPS} steps)": lambda: inference.iterative(
            loss_fn, BATCH, n_classes, steps=ITER_STEPS, lr=0.1
        ),
        "exhaustive, naive (C x forward)": lambda: inference.exhaustive(loss_fn, BATCH, n_classes),
        "exhaustive, code cached": exhaustive_cached,
    }


def main() -> None:
    torch.set_num_threads(1)
    for n_classes in (10, 100):
        medians = interleaved(candidates(n_classes), repeats=REPEATS)
        medians[f"iterative GBI / step ({ITER_STEPS} steps)"] /= ITER_STEPS + 1  # + the final evaluation
        report(
            f"GBI cost, conditional autoencoder (C={n_classes}), batch {BATCH}, 1 thread",
            medians,
            "forward + backward (weights)",
        )
        one_step = medians["one-step GBI"]
        print(
            f"  one-step / forward+backward: {one_step / medians['forward + backward (weights)']:.2f}x; "
            f"exhaustive / one-step: naive {medians['exhaustive, naive (C x forward)'] / one_step:.1f}x, "
            f"code cached {medians['exhaustive, code cached'] / one_step:.1f}x"
        )


if __name__ == "__main__":
    main()
