"""The training loop: checkpoints carry the config, and resume after kill -9 is bit-identical."""

import os
import subprocess
import sys
import textwrap

import torch

from taskabs.train import KILL_AT_STEP_ENV, train

SCRIPT = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    from taskabs.train import train
    torch.manual_seed(0); torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    def step_loss(net, step):
        batch = data[(step * 8) % 64:(step * 8) % 64 + 8]
        noise = torch.randn(8, 1) * 0.1  # consumes torch's RNG: it must be restored on resume
        return ((net(batch) - batch.sum(1, keepdim=True) - noise) ** 2).mean(), {"step": step}
    result = train(model, opt, step_loss, steps=40, checkpoint_path=Path(sys.argv[1]),
                   checkpoint_every=5, resolved_config={"lr": 1e-2})
    torch.save({"model": model.state_dict(), "history": result.history,
                "resumed_from": result.resumed_from}, sys.argv[2])
""")


def run_training(tmp_path, name, kill_at=None):
    env = {**os.environ, "CI": "true"}
    if kill_at:
        env[KILL_AT_STEP_ENV] = str(kill_at)
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / f"{name}.ckpt"), str(tmp_path / f"{name}.pt")],
        env=env,
        capture_output=True,
        text=True,
    )


def test_resume_after_kill_9_is_bit_identical(tmp_path):
    assert run_training(tmp_path, "clean").returncode == 0
    killed = run_training(tmp_path, "killed", kill_at=23)
    assert killed.returncode == -9 and not (tmp_path / "killed.pt").exists()
    checkpoint = torch.load(tmp_path / "killed.ckpt", weights_only=False)
    assert checkpoint["step"] == 20 and checkpoint["config"] == {"lr": 1e-2}
    assert run_training(tmp_path, "killed").returncode == 0
    clean, resumed = (torch.load(tmp_path / f"{n}.pt", weights_only=False) for n in ("clean", "killed"))
    assert resumed["resumed_from"] == 20
    assert resumed["history"] == clean["history"]
    for key, value in clean["model"].items():
        assert torch.equal(value, resumed["model"][key]), key


def test_checkpoint_of_another_config_is_not_resumed(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "ckpt.pt"
    torch.save({"step": 3, "config_hash": "something-else"}, path)
    result = train(
        model,
        opt,
        lambda m, s: (m(torch.ones(1, 2)).pow(2).sum(), {}),
        steps=4,
        checkpoint_path=path,
        checkpoint_every=2,
        resolved_config={"lr": 0.1},
    )
    assert result.resumed_from == 0 and len(result.history["loss"]) == 4
