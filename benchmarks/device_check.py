"""The GPU path, measured: the library's model, training loop and GBI inference on `device: auto`.

Needs only torch and numpy (plus src/ on the path), so it runs on an accelerator machine without
the project's other dependencies. It checks that `auto` picks CUDA when one is visible, that two
runs of one seed give bit-identical weights and GBI outputs, and reports, as ratios taken in this
one run: one-step GBI against a plain forward+backward at a large batch, and training throughput
on the chosen device against the CPU.

    python benchmarks/device_check.py [--quick] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from taskabs import inference  # noqa: E402
from taskabs.devices import make_deterministic, resolve_device  # noqa: E402
from taskabs.models.language import CharModelConfig, CorpusConditionedCharLSTM  # noqa: E402
from taskabs.train import train  # noqa: E402

VOCAB, TASKS, WINDOW = 64, 4, 64


def data(batch: int, device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, TASKS, (batch,), generator=g)
    # each corpus favours its own quarter of the vocabulary, so z carries information
    ids = (
        torch.randint(0, VOCAB // TASKS, (batch, WINDOW), generator=g) + labels[:, None] * (VOCAB // TASKS)
    ) % VOCAB
    return ids.to(device), labels.to(device)


def train_once(device, steps: int, batch: int, tmp: Path, seed: int = 0) -> tuple[dict, float]:
    torch.manual_seed(seed)
    model = CorpusConditionedCharLSTM(CharModelConfig(vocab_size=VOCAB, n_tasks=TASKS)).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    ids, labels = data(batch * 4, device, seed)
    z = torch.nn.functional.one_hot(labels, TASKS).float()

    def step_loss(m, step):
        rows = slice((step % 4) * batch, (step % 4 + 1) * batch)
        return m.loss_per_example(ids[rows], z[rows]).mean(), {}

    checkpoint = tmp / f"{device.type}-{seed}-{time.monotonic_ns()}.pt"
    _sync(device)
    started = time.perf_counter()
    train(
        model,
        optimiser,
        step_loss,
        steps=steps,
        checkpoint_path=checkpoint,
        checkpoint_every=10**9,
        resolved_config={"device_check": True},
    )
    _sync(device)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}, time.perf_counter() - started


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def gbi_outputs(model, ids) -> dict[str, torch.Tensor]:
    def loss_fn(z):
        return model.loss_per_example(ids, z)

    n = len(ids)
    return {
        "one_step": inference.one_step(loss_fn, n, TASKS, device=ids.device).cpu(),
        "iterative": inference.iterative(loss_fn, n, TASKS, steps=10, lr=0.1, device=ids.device).z.cpu(),
        "exhaustive": inference.exhaustive(loss_fn, n, TASKS, device=ids.device).cpu(),
    }


def timed(fn, device, repeats: int) -> float:
    fn()  # warm-up (kernels, allocator)
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - started) / repeats


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CPU tests)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    make_deterministic()
    steps, batch, big, repeats = (6, 8, 64, 1) if args.quick else (200, 256, 8192, 10)
    device = resolve_device("auto")
    tmp = Path(tempfile.mkdtemp(prefix="device-check-"))
    report = {"device": str(device), "cuda_visible": torch.cuda.is_available(), "torch": torch.__version__}
    if torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name(0)
        assert device.type == "cuda", "device: auto did not pick the visible CUDA device"

    weights_a, seconds = train_once(device, steps, batch, tmp)
    weights_b, _ = train_once(device, steps, batch, tmp)
    report["train_bit_identical"] = all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    report["train_steps_per_s"] = steps / seconds

    model = CorpusConditionedCharLSTM(CharModelConfig(vocab_size=VOCAB, n_tasks=TASKS)).to(device)
    model.load_state_dict(weights_a)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    ids, _ = data(big, device, seed=1)
    first, second = gbi_outputs(model, ids), gbi_outputs(model, ids)
    report["gbi_bit_identical"] = all(torch.equal(first[k], second[k]) for k in first)

    z0 = inference.uniform_z(big, TASKS, device=device)
    trainable = CorpusConditionedCharLSTM(CharModelConfig(vocab_size=VOCAB, n_tasks=TASKS)).to(device)
    trainable.load_state_dict(weights_a)

    def forward_backward():  # what one training step costs at this batch, without the update
        trainable.zero_grad(set_to_none=True)
        trainable.loss_per_example(ids, z0).mean().backward()

    def one_step():
        inference.one_step(lambda z: model.loss_per_example(ids, z), big, TASKS, device=device)

    def exhaustive():
        inference.exhaustive(lambda z: model.loss_per_example(ids, z), big, TASKS, device=device)

    fb = timed(forward_backward, device, repeats)
    report["batch"] = big
    report["one_step_over_forward_backward"] = timed(one_step, device, repeats) / fb
    report["exhaustive_over_forward_backward"] = timed(exhaustive, device, repeats) / fb
    if device.type != "cpu":
        _, cpu_seconds = train_once(torch.device("cpu"), steps, batch, tmp)
        report["train_speedup_over_cpu"] = cpu_seconds / seconds
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
