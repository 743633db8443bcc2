"""learn()'s run edges (rlkit/core/agent_io.py LearnRun): the run's total budget drives schedules, evaluation
during training never changes the run, and device="auto" follows its documented rule (rlkit/core/device.py)."""
from __future__ import annotations

import pytest
import torch

CFG = dict(n_envs=2, n_steps=8, hidden_sizes=(16,), lr_schedule="linear")


def _params(agent):
    return [p.detach().clone() for p in [*agent.actor.parameters(), *agent.critic.parameters()]]


@pytest.mark.parametrize("algo", ["a2c", "qac"])
def test_linear_lr_over_the_total_budget_split_equals_one_call(algo):
    from rlkit.agents import get_agent_class

    cls = get_agent_class(algo)
    one = cls("CartPole-v1", config=CFG, seed=1, device="cpu").learn(64, progress=False)
    split = cls("CartPole-v1", config=CFG, seed=1, device="cpu")
    split.learn(32, progress=False, total_budget=64)
    assert split.total_budget == 64
    split.learn(32, progress=False)  # the stored budget: the schedule continues, it does not restart
    assert all(torch.equal(a, b) for a, b in zip(_params(one), _params(split)))
    restarted = cls("CartPole-v1", config=CFG, seed=1, device="cpu")
    restarted.learn(32, progress=False)  # no budget given: this call's end, then extended by the next call
    restarted.learn(32, progress=False)
    assert restarted.total_budget == 64
    assert not all(torch.equal(a, b) for a, b in zip(_params(one), _params(restarted)))
    with pytest.raises(ValueError, match="total_budget 70 is below the step this call trains to"):
        split.learn(16, progress=False, total_budget=70)


def test_evaluation_during_training_leaves_the_run_unchanged(tmp_path):
    from rlkit import A2C

    plain = A2C("CartPole-v1", config=CFG, seed=2, device="cpu").learn(64, progress=False)
    seen = []
    evald = A2C("CartPole-v1", config=CFG, seed=2, device="cpu")
    evald.learn(64, progress=False, run_dir=tmp_path / "run", eval_freq=32, n_eval_episodes=1,
                callback=lambda ag, m: seen.append(m))
    assert all(torch.equal(a, b) for a, b in zip(_params(plain), _params(evald)))
    assert sum("eval/mean_return" in m for m in seen) == 2 and evald.best_eval["step"] in (32, 64)
    best = A2C.load(tmp_path / "run" / "checkpoints" / "best.pt", device="cpu")
    assert best.num_timesteps == evald.best_eval["step"] and best.best_eval == evald.best_eval
    with pytest.raises(ValueError, match="eval_freq must be a non-negative integer"):
        evald.learn(8, progress=False, eval_freq=-1)


def test_auto_device_rule():
    from rlkit.core.device import AUTO_GPU_MIN_BATCH, auto_device

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert auto_device("a2c", False, 64, cuda_available=False)[0] == cpu
    assert auto_device("ddpg", True, 10**6, True, cuda_available=False) == (cpu, "no CUDA GPU here")
    small = auto_device("a2c", False, 2048, cuda_available=True)
    assert small[0] == cpu and "CPU-stepped envs" in small[1]
    assert auto_device("a2c", False, AUTO_GPU_MIN_BATCH, cuda_available=True)[0] == gpu
    assert auto_device("trpo", False, 4 * AUTO_GPU_MIN_BATCH, cuda_available=True)[0] == cpu
    assert auto_device("a2c", True, 40, cuda_available=True) == (gpu, "image observations (convolutions run faster "
                                                                      "on the GPU)")
    assert auto_device("ddpg", False, 256, cuda_available=True)[0] == gpu
    assert auto_device("reinforce", False, 8, env_on_gpu=True, cuda_available=True)[0] == gpu
    from rlkit import REINFORCE

    agent = REINFORCE("CartPole-v1", n_envs=2, n_steps=8, seed=0)  # device="auto"
    expected = auto_device("reinforce", False, 16)
    assert (agent.device, agent.device_reason) == expected


@pytest.mark.cuda
def test_auto_device_on_a_gpu_machine_keeps_small_mlp_runs_on_the_cpu():
    from rlkit import A2C, DDPG

    a2c = A2C("CartPole-v1", n_envs=2, n_steps=8, seed=0)
    assert a2c.device.type == "cpu" and "CPU-stepped envs" in a2c.device_reason
    ddpg = DDPG("Pendulum-v1", seed=0, learning_starts=10)
    assert ddpg.device.type == "cuda" and "CUDA graphs" in ddpg.device_reason
