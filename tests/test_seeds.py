"""Many seeds in one process (rlkit.core.seeds): seed k of a batch trains exactly as seed k alone (float64, every
parameter within 1e-6 after 50 updates, for A2C, TRPO, REINFORCE and DDPG); each seed writes the run directory,
logs and checkpoints a lone run writes, and its checkpoint loads as one agent; a batch resumes exactly; the CLI's
and the bench's --seeds-per-process, and their one-line errors."""
from __future__ import annotations

import copy

import csv
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import rlkit
from rlkit import A2C, DDPG, QAC, REINFORCE, TRPO, SeedBatch
from rlkit.cli import main
from rlkit.core.envs import SameStepSyncVectorEnv, WorkerVecEnv

SEEDS = [1, 2]
CASES = {  # (class, env, config, environment steps for 50 updates)
    "a2c": (A2C, "CartPole-v1", dict(n_envs=2, n_steps=4, hidden_sizes=(16,), normalize_obs=True, ent_coef=0.01,
                                     lr_schedule="linear", normalize_reward=True), 50 * 8),
    "trpo": (TRPO, "CartPole-v1", dict(n_envs=2, n_steps=6, hidden_sizes=(8,), batch_size=12, n_critic_updates=1,
                                       fvp_subsample=0.5, normalize_obs=True, cg_max_steps=4,
                                       line_search_max_iter=3), 50 * 12),
    "reinforce": (REINFORCE, "Pendulum-v1", dict(n_envs=2, n_steps=4, hidden_sizes=(16,), normalize_obs=True,
                                                 vf_iters=2, ent_coef=0.01), 50 * 8),
    "ddpg": (DDPG, "Pendulum-v1", dict(n_envs=2, hidden_sizes=(16, 16), batch_size=16, learning_starts=8,
                                       buffer_size=500, noise_type="ornstein_uhlenbeck", policy_delay=2,
                                       normalize_obs=True), (50 + 4) * 2),
}


@pytest.fixture
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def tensors(agent):
    """Every tensor of an agent's state: parameters, target networks, optimiser moments, normaliser statistics."""
    out = {}

    def walk(prefix, v):
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            out[prefix] = v
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}", x)
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                walk(f"{prefix}.{i}", x)
    walk("", agent.state_dict())
    return out


@pytest.mark.parametrize("algo", list(CASES))
def test_seed_k_of_a_batch_equals_seed_k_trained_alone(algo, float64):
    cls, env, cfg, steps = CASES[algo]
    batch = SeedBatch(cls, env, SEEDS, device="cpu", **cfg).learn(steps, progress=False)
    alone = cls(env, seed=SEEDS[1], device="cpu", **cfg).learn(steps, progress=False)
    mine = batch.agents[1]
    assert mine.n_updates == alone.n_updates >= 50 and mine.num_timesteps == alone.num_timesteps
    assert next(mine.actor.parameters()).dtype == torch.float64
    a, b = tensors(alone), tensors(mine)
    assert a.keys() == b.keys() and len(a) >= 8
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-6, worst
    # the two seeds of the batch are different runs, not copies
    other = tensors(batch.agents[0])
    assert max((other[k] - b[k]).abs().max().item() for k in a) > 1e-3
    assert mine.collector.episode_stats() == alone.collector.episode_stats()


def test_ddpg_seeds_in_worker_processes_step_together_and_equal_their_lone_runs(float64):
    """vectorization="async": every seed's envs live in worker processes, sent their actions before any is waited
    for (rollout.Lockstep); with reward normalisation, Gaussian noise and buffers that wrap around, seed k
    still trains as alone (stacked buffers: each agent's buffer holds what its lone run's holds)."""
    cfg = dict(n_envs=1, vectorization="async", hidden_sizes=(16,), batch_size=8, learning_starts=6, buffer_size=37,
               normalize_reward=True, normalize_obs=True, save_replay_buffer=True)
    batch = SeedBatch(DDPG, "Pendulum-v1", SEEDS, device="cpu", **cfg)
    alone = None
    try:
        batch.learn(60, progress=False)
        alone = DDPG("Pendulum-v1", seed=SEEDS[1], device="cpu", **cfg).learn(60, progress=False)
        mine = batch.agents[1]
        x, y = tensors(alone), tensors(mine)
        assert x.keys() == y.keys() and max((x[k] - y[k]).abs().max().item() for k in x) <= 1e-6
        assert torch.equal(alone.buffer.data, mine.buffer.data) and alone.buffer.pos == mine.buffer.pos
        assert mine.collector.state_dict() == alone.collector.state_dict()
        assert torch.equal(mine._obs_t, alone._obs_t)  # each agent's own staged observation, as alone
        other, pos = batch.agents[0].buffer.data.clone(), mine.buffer.pos
        mine.learn(4, progress=False)  # a seed of the batch trained alone afterwards writes its own buffer row only
        assert torch.equal(other, batch.agents[0].buffer.data) and mine.buffer.pos == (pos + 4) % 37
        rows = mine.buffer.data[pos - 1:pos + 4]  # the batch's last transition, then the 4 written alone
        assert torch.equal(rows[:-1, 5:8], rows[1:, 0:3])  # each next_obs is the next transition's obs
    finally:
        for a in [*batch.agents, alone]:
            if a is not None:
                a.env.close()


def test_ddpg_seeds_share_env_workers_and_equal_their_lone_runs(float64):
    """vectorization="auto" (the default): the seeds' envs move into ONE set of shared worker processes (EnvWorkers,
    several sub-envs each) stepped as one batch; past Pendulum's time limit (true final observations in the stored
    transitions), with OU noise, seed k trains exactly as alone, keeps its view afterwards (a lone learn() steps
    it), and a second learn() of the batch reuses the same workers. vectorization="sync" keeps them in process."""
    cfg = dict(n_envs=2, hidden_sizes=(16,), batch_size=8, learning_starts=6, buffer_size=300,
               noise_type="ornstein_uhlenbeck")
    batch = SeedBatch(DDPG, "Pendulum-v1", [3, *SEEDS], device="cpu", **cfg)
    alone = in_process = None
    try:
        batch.learn(2 * 205, progress=False)
        views = [a.env for a in batch.agents]
        assert all(isinstance(v, WorkerVecEnv) and v.pool is views[0].pool for v in views)
        assert [a.collector.env for a in batch.agents] == views and views[0].pool.num_envs == 6
        alone = DDPG("Pendulum-v1", seed=SEEDS[1], device="cpu", **cfg).learn(2 * 205, progress=False)
        mine = batch.agents[2]
        x, y = tensors(alone), tensors(mine)
        assert max((x[k] - y[k]).abs().max().item() for k in x) <= 1e-6
        assert torch.equal(alone.buffer.data, mine.buffer.data) and mine.collector.episodes_done == 2
        assert mine.collector.state_dict() == alone.collector.state_dict()
        pos = mine.buffer.pos
        mine.learn(4, progress=False)  # alone, through its view: its sub-envs go on from where the batch left them
        rows = mine.buffer.data[pos - 2:pos + 4]  # the batch's last vector step, then the 2 taken alone
        assert mine.buffer.pos == pos + 4 and torch.equal(rows[:-2, 5:8], rows[2:, 0:3])  # next_obs -> next obs
        batch.agents[0].learn(4, progress=False)
        batch.agents[1].learn(4, progress=False)
        batch.learn(6, progress=False)
        assert all(a.env is v for a, v in zip(batch.agents, views))
        in_process = SeedBatch(DDPG, "Pendulum-v1", SEEDS, device="cpu", **cfg, vectorization="sync")
        in_process.learn(20, progress=False)
        assert all(type(a.env) is SameStepSyncVectorEnv for a in in_process.agents)
    finally:
        for a in [*batch.agents, alone, *(in_process.agents if in_process else [])]:
            if a is not None:
                a.env.close()
    assert views[0].pool.closed


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_each_seed_writes_a_lone_runs_directory_and_its_checkpoint_loads_as_one_agent(tmp_path):
    cfg = dict(n_envs=2, n_steps=8, hidden_sizes=(16,), checkpoint_interval=64)
    batch = SeedBatch(A2C, "CartPole-v1", SEEDS, device="cpu", **cfg)
    dirs = [tmp_path / f"seed{s}" for s in SEEDS]
    batch.learn(256, run_dirs=dirs, progress=False, log_interval=64)
    alone = A2C("CartPole-v1", seed=SEEDS[1], device="cpu", **cfg)
    alone.learn(256, run_dir=tmp_path / "alone", progress=False, log_interval=64)
    lone_files = sorted(p.name for p in (tmp_path / "alone").rglob("*") if "tfevents" not in p.name)
    for k, d in enumerate(dirs):
        assert sorted(p.name for p in d.rglob("*") if "tfevents" not in p.name) == lone_files
        assert list(d.glob("events.out.tfevents.*"))
        assert json.loads((d / "config.json").read_text())["seed"] == SEEDS[k]
    mine, lone = _rows(dirs[1] / "progress.csv"), _rows(tmp_path / "alone" / "progress.csv")
    assert list(mine[0]) == list(lone[0]) and [r["step"] for r in mine] == [r["step"] for r in lone]
    for m, r in zip(mine, lone):
        for key in r:
            if key != "time/sps":
                assert float(m[key]) == pytest.approx(float(r[key]), rel=1e-4, abs=1e-6), key
    # seed k's checkpoint is one agent: it loads as such, holds seed k's state only, and acts as the batch's seed k
    for k, d in enumerate(dirs):
        path = d / "checkpoints" / "final.pt"
        loaded = rlkit.load_agent(str(path), device="cpu")
        assert isinstance(loaded, A2C) and loaded.seed == SEEDS[k] and loaded.num_timesteps == 256
        assert A2C.load(path, device="cpu").n_updates == batch.agents[k].n_updates
        assert torch.equal(loaded.flat.param, batch.agents[k].flat.param)
        obs = np.random.default_rng(k).normal(size=(16, 4)).astype(np.float32)
        assert np.array_equal(loaded.act(obs, deterministic=True), batch.agents[k].act(obs, deterministic=True))
        assert np.allclose(loaded.value(obs), batch.agents[k].value(obs))
        assert path.stat().st_size < 1.2 * (tmp_path / "alone" / "checkpoints" / "final.pt").stat().st_size
    assert sorted(p.name for p in (dirs[0] / "checkpoints").glob("step_*.pt")) == ["step_128.pt", "step_192.pt",
                                                                                  "step_256.pt"]


def test_a_batch_resumed_from_its_checkpoints_continues_exactly(tmp_path, float64):
    cfg = dict(n_envs=2, n_steps=4, hidden_sizes=(16,), lr_schedule="linear", checkpoint_interval=40)
    whole = SeedBatch(A2C, "CartPole-v1", SEEDS, device="cpu", **cfg).learn(80, progress=False)
    first = SeedBatch(A2C, "CartPole-v1", SEEDS, device="cpu", **cfg)
    dirs = [tmp_path / f"seed{s}" for s in SEEDS]
    first.learn(40, run_dirs=dirs, progress=False, total_budget=80)
    again = SeedBatch.load(A2C, [d / "checkpoints" / "final.pt" for d in dirs], env="CartPole-v1", device="cpu",
                           restore_env=True)
    assert again.seeds == SEEDS and again.agents[0].num_timesteps == 40
    again.learn(40, run_dirs=dirs, progress=False)
    for a, b in zip(whole.agents, again.agents):
        assert torch.equal(a.flat.param, b.flat.param)
    assert [r["step"] for r in _rows(dirs[0] / "progress.csv")] == ["40", "80"]


def test_bad_batches_are_refused_with_one_line():
    import gymnasium as gym

    with pytest.raises(ValueError, match="qac cannot train several seeds in one process"):
        SeedBatch(QAC, "CartPole-v1", SEEDS)
    with pytest.raises(ValueError, match="not a CartPoleEnv instance"):
        SeedBatch(A2C, gym.make("CartPole-v1").unwrapped, SEEDS)
    with pytest.raises(ValueError, match="seeds must be distinct"):
        SeedBatch(A2C, "CartPole-v1", [3, 3])
    with pytest.raises(ValueError, match="pass policy= as a factory"):
        SeedBatch(A2C, "CartPole-v1", SEEDS, policy=nn.Linear(4, 2))
    class MultiEnv(gym.Env):
        observation_space, action_space = gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.MultiDiscrete([2, 3])

        def reset(self, *, seed=None, options=None):
            return np.zeros(3, np.float32), {}

        def step(self, action):
            return np.zeros(3, np.float32), 0.0, False, False, {}

    with pytest.raises(ValueError, match=r"MultiDiscrete\(\[2 3\]\) actions cannot be trained as several seeds"):
        SeedBatch(A2C, MultiEnv, SEEDS, device="cpu", n_envs=1, n_steps=2)
    batch = SeedBatch(A2C, "Pendulum-v1", SEEDS, device="cpu", use_sde=True, n_envs=1, n_steps=4)
    with pytest.raises(ValueError, match="use_sde .gSDE. is not supported when training several seeds"):
        batch.learn(8, progress=False)
    with pytest.raises(ValueError, match="run_dirs has 1 entries for 2 seeds"):
        batch.learn(8, run_dirs=["x"], progress=False)
    batch = SeedBatch(A2C, "CartPole-v1", SEEDS, device="cpu", n_envs=1, n_steps=4)
    batch.agents[1].learn(8, progress=False)  # one seed trained alone in between: no longer in lockstep
    with pytest.raises(ValueError, match="the seeds' agents are at different steps .0, 8."):
        batch.learn(8, progress=False)
    batch = SeedBatch(DDPG, "Pendulum-v1", SEEDS, device="cpu", vectorization="sync", hidden_sizes=(8,),
                      buffer_size=50)
    z = np.zeros((1, 3), np.float32)
    batch.agents[1].buffer.add(z, np.zeros((1, 1)), np.zeros(1), z, np.zeros(1, bool))  # one buffer written alone
    with pytest.raises(ValueError, match="differ in vector steps taken or in replay buffer size"):
        batch.learn(4, progress=False)


def test_custom_network_factories_and_a_shared_trunk_run_batched(float64):
    def policy(in_dim, out_dim):
        return nn.Sequential(nn.Linear(in_dim, 8), nn.Tanh(), nn.Linear(8, out_dim))

    for kw in (dict(policy=policy), dict(shared_trunk=True)):
        cfg = dict(n_envs=2, n_steps=4, hidden_sizes=(8, 8), device="cpu", **kw)
        batch = SeedBatch(A2C, "CartPole-v1", SEEDS, **cfg).learn(40, progress=False)
        alone = A2C("CartPole-v1", seed=SEEDS[0], **cfg).learn(40, progress=False)
        assert (batch.agents[0].flat.param - alone.flat.param).abs().max().item() <= 1e-9


# ---- the command line ----------------------------------------------------------------------------------------------
TRAIN = ["train", "a2c", "CartPole-v1", "--device", "cpu", "--no-progress", "--eval-episodes", "1", "--set",
         "n_steps=8", "--n-envs", "2", "--no-preset"]


def test_cli_trains_seeds_in_one_process_and_resumes_them(tmp_path, capsys):
    template = str(tmp_path / "s{seed}")
    assert main([*TRAIN, "--steps", "64", "--seeds", "3-4", "--seeds-per-process", "2", "--run-dir", template,
                 "--set", "checkpoint_interval=32"]) == 0
    err = capsys.readouterr().err
    assert "seeds 3, 4 in one process" in err
    for s in (3, 4):
        result = json.loads((tmp_path / f"s{s}" / "result.json").read_text())
        assert result["seed"] == s and result["steps"] == 64 and "mean_return" in result
    assert main([*TRAIN, "--steps", "96", "--seeds", "3,4", "--seeds-per-process", "2", "--resume", template]) == 0
    err = capsys.readouterr().err
    assert "resuming at step 64 to 96" in err
    for s in (3, 4):
        assert json.loads((tmp_path / f"s{s}" / "result.json").read_text())["steps"] == 96
        assert [r["step"] for r in _rows(tmp_path / f"s{s}" / "progress.csv")] == ["64", "96"]
    # without --seeds-per-process the seeds train one after another, each in its own run directory
    assert main([*TRAIN, "--steps", "16", "--seeds", "2", "--run-dir", str(tmp_path / "one{seed}")]) == 0
    assert (tmp_path / "one0" / "result.json").exists() and (tmp_path / "one1" / "result.json").exists()


@pytest.mark.parametrize("extra,needle", [
    (["--seeds", "0,1", "--seeds-per-process", "0"], "--seeds-per-process must be >= 1, got 0"),
    (["--seeds", "0,1", "--seeds-per-process", "3"], "--seeds-per-process 3 is more than the 2 seeds given"),
    (["--seed", "0", "--seeds-per-process", "2"], "--seeds-per-process 2 is more than the 1 seed given"),
    (["--seed", "0", "--seeds", "0,1"], "give --seed or --seeds, not both"),
    (["--seeds", "0,1", "--run-dir", "somewhere"], "--run-dir must contain {seed} when training several seeds"),
    (["--seeds", "3-1"], "--seeds must be a count, a comma-separated list of integers or ranges like 0-7"),
])
def test_cli_bad_seed_options_are_one_line_exit_2(extra, needle, capsys):
    assert main([*TRAIN, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_cli_refuses_seeds_per_process_for_an_agent_without_it(capsys):
    assert main(["train", "qac", "CartPole-v1", "--seeds", "0,1", "--seeds-per-process", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("rlkit: error: qac cannot train several seeds in one process; --seeds-per-process > 1 supports "
                   "reinforce, a2c, trpo, ddpg")


@pytest.mark.parametrize("extra,needle", [
    (["--algos", "a2c", "--seeds", "0,1", "--seeds-per-process", "0"], "--seeds-per-process must be >= 1, got 0"),
    (["--algos", "a2c", "--seeds", "0,1", "--seeds-per-process", "3"], "is more than the 2 seeds of the grid"),
    (["--algos", "a2c,qac", "--seeds", "0,1", "--seeds-per-process", "2"], "qac cannot train several seeds"),
])
def test_bench_bad_seeds_per_process_is_one_line_exit_2(extra, needle, tmp_path, capsys):
    assert main(["bench", "--envs", "CartPole-v1", "--out", str(tmp_path / "g"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "g").exists()


def test_bench_seeds_per_process_writes_the_runs_and_manifest_rows_of_separate_runs(tmp_path, capsys):
    out = tmp_path / "grid"
    # seeds 0 and 1 were trained together and "killed" after their periodic checkpoint at step 64 (no final.pt,
    # no result.json): the bench resumes them together; seeds 2 and 3 are new: another process trains them.
    killed = SeedBatch(REINFORCE, "CartPole-v1", [0, 1], device="cpu", n_steps=16, n_envs=2, checkpoint_interval=64)
    killed.learn(64, run_dirs=[out / "CartPole-v1" / "reinforce" / f"seed{s}" for s in (0, 1)], progress=False,
                 total_budget=128)
    for s in (0, 1):
        (out / "CartPole-v1" / "reinforce" / f"seed{s}" / "checkpoints" / "final.pt").unlink()
    argv = ["bench", "--algos", "reinforce", "--envs", "CartPole-v1", "--seeds", "4", "--out", str(out),
            "--steps", "128", "--eval-episodes", "1", "--set", "n_steps=16", "--set", "n_envs=2", "--jobs", "2",
            "--seeds-per-process", "2"]
    assert main(argv) == 0
    assert "4 runs (0 finished, 2 to resume, 0 running elsewhere)" in capsys.readouterr().err
    m = json.loads((out / "manifest.json").read_text())
    assert m["grid"]["seeds_per_process"] == 2
    rows = m["runs"]
    assert sorted(rows) == [f"CartPole-v1/reinforce/seed{s}" for s in range(4)]
    keys = {"algo", "attempts", "command", "config", "device", "ended_at", "env_id", "git_revision", "host",
            "mean_return", "resume_from", "returncode", "run_dir", "seed", "started_at", "status", "std_return",
            "steps", "versions", "wall_time_s"}  # what a separate run's row holds
    for s in range(4):
        row = rows[f"CartPole-v1/reinforce/seed{s}"]
        assert set(row) == keys and row["status"] == "finished" and row["seed"] == s and row["steps"] == 128
        assert row["config"]["seed"] == s and row["run_dir"] == f"CartPole-v1/reinforce/seed{s}"
        pair = "0,1" if s < 2 else "2,3"
        assert f"--seeds {pair} --seeds-per-process 2" in row["command"]
        template = shlex.quote(str(out / "CartPole-v1/reinforce/seed{seed}"))
        assert row["command"].endswith(f"--resume {template}") == (s < 2)
        run = out / row["run_dir"]
        assert (run / "stdout.log").read_text().startswith("=== ")
        assert (run / "checkpoints" / "final.pt").exists() and (run / "result.json").exists()
        steps = [r["step"] for r in _rows(run / "progress.csv")]
        assert len(steps) == len(set(steps)) and steps[-1] == "128"
    assert sorted(r["seed"] for r in json.loads((out / "results.json").read_text())) == [0, 1, 2, 3]


def test_torch_env_seeds_step_as_one_and_equal_their_lone_runs(float64):
    cfg = dict(n_envs=4, n_steps=5, hidden_sizes=(16,), env_backend="torch", device="cpu")
    batch = SeedBatch(A2C, "CartPole-v1", SEEDS, **cfg).learn(50 * 20, progress=False)
    alone = A2C("CartPole-v1", seed=SEEDS[1], **cfg).learn(50 * 20, progress=False)
    mine = batch.agents[1]
    assert (mine.flat.param - alone.flat.param).abs().max().item() <= 1e-6
    assert torch.equal(mine.env.state, alone.env.state) and torch.equal(mine.env.elapsed, alone.env.elapsed)
    assert mine.collector.episode_stats() == alone.collector.episode_stats() != {}
    assert mine.collector.state_dict() == alone.collector.state_dict()
    # shared streams: one draw for all seeds; the seeds still differ and the batch is reproducible
    one = SeedBatch(A2C, "CartPole-v1", SEEDS, exact=False, **cfg).learn(200, progress=False)
    two = SeedBatch(A2C, "CartPole-v1", SEEDS, exact=False, **cfg).learn(200, progress=False)
    assert torch.equal(one.agents[1].flat.param, two.agents[1].flat.param)
    assert not torch.equal(one.agents[0].flat.param, one.agents[1].flat.param)


@pytest.mark.parametrize("algo", ["trpo", "reinforce"])
def test_torch_env_seeds_of_trpo_and_reinforce_equal_their_lone_runs(algo, float64):
    """Discrete (CartPole: uniform noise) and Box (Pendulum: Box-Muller normal noise) torch envs."""
    if algo == "trpo":
        cls, env, cfg = TRPO, "CartPole-v1", dict(n_envs=2, n_steps=6, hidden_sizes=(8,), batch_size=12,
                                                   n_critic_updates=1, fvp_subsample=0.5, cg_max_steps=4,
                                                   line_search_max_iter=3)
    else:
        cls, env, cfg = REINFORCE, "Pendulum-v1", dict(n_envs=4, n_steps=5, hidden_sizes=(16,), vf_iters=2)
    steps = 20 * cfg["n_envs"] * cfg["n_steps"]
    batch = SeedBatch(cls, env, SEEDS, device="cpu", env_backend="torch", **cfg).learn(steps, progress=False)
    alone = cls(env, seed=SEEDS[1], device="cpu", env_backend="torch", **cfg).learn(steps, progress=False)
    x, y = tensors(alone), tensors(batch.agents[1])
    assert max((x[k] - y[k]).abs().max().item() for k in x) <= 1e-6
    assert torch.equal(alone.env.state, batch.agents[1].env.state)
    assert alone.collector.state_dict() == batch.agents[1].collector.state_dict()  # with the streams' counters


def test_a_torch_env_rollout_draws_nothing_from_the_global_generator(float64):
    """Its action noise and reset states come from the agent's counter streams (A2C's update draws nothing)."""
    cfg = dict(n_envs=4, n_steps=5, hidden_sizes=(16,), env_backend="torch", device="cpu")
    a, b = A2C("CartPole-v1", seed=3, **cfg), A2C("CartPole-v1", seed=3, **cfg)
    torch.manual_seed(12345)  # b's global generator is elsewhere than a's
    a.learn(200, progress=False)
    b.learn(200, progress=False)
    assert torch.equal(a.flat.param, b.flat.param) and torch.equal(a.env.state, b.env.state)
    assert int(a.collector.action_noise_stream.counter) == 200 // 4 and int(a.env.stream.counter) == 1 + 200 // 4


def test_a_torch_env_batch_loaded_from_checkpoints_continues_each_seeds_streams(tmp_path):
    cfg = dict(n_envs=2, n_steps=4, hidden_sizes=(8,), env_backend="torch")
    whole = SeedBatch(A2C, "CartPole-v1", SEEDS, device="cpu", **cfg).learn(80, progress=False)
    dirs = [tmp_path / f"seed{s}" for s in SEEDS]
    SeedBatch(A2C, "CartPole-v1", SEEDS, device="cpu", **cfg).learn(40, run_dirs=dirs, progress=False)
    again = SeedBatch.load(A2C, [d / "checkpoints" / "final.pt" for d in dirs], env="CartPole-v1", device="cpu",
                           env_backend="torch")
    assert [a.collector.state_dict()["streams"] for a in again.agents] == [{"action_noise": 20, "env_resets": 21}] * 2
    again.learn(40, progress=False)
    for a, b in zip(whole.agents, again.agents):
        assert a.collector.state_dict()["streams"] == b.collector.state_dict()["streams"]
        assert torch.equal(a.collector.action_noise_stream.keys, b.collector.action_noise_stream.keys)


def _graph_ready_on_the_cpu(monkeypatch):
    """The graph-ready configuration (capturable optimisers, steps as GraphedSteps) on the CPU, each 'replay'
    rerunning the captured step: what a replayed CUDA graph computes, provided the steps keep their state in
    tensors updated in place (tests/agents/test_on_device.py checks that for one agent)."""
    from rlkit.core import agent_io
    from rlkit.core.device import GraphedStep

    class ReplayByRerun:
        def __init__(self, fn):
            self.fn = fn

        def replay(self):
            self.fn()

    def capture(self):
        out = self.fn()
        self.graph, self.out = ReplayByRerun(self.fn), out
        return out

    monkeypatch.setattr(agent_io, "cuda_graphs", lambda *a, **k: (True, "graph-ready on the CPU (test)"))
    monkeypatch.setattr(GraphedStep, "_capture_and_replay", capture)


def test_the_graph_ready_batch_equals_its_lone_runs(monkeypatch, float64):
    _graph_ready_on_the_cpu(monkeypatch)
    cfg = dict(n_envs=4, n_steps=5, hidden_sizes=(16,), env_backend="torch", normalize_obs=True, lr_schedule="linear",
               device="cpu")
    batch = SeedBatch(A2C, "CartPole-v1", SEEDS, **cfg)
    assert batch.agents[0].cuda_graphs and batch.agents[0].optimizer.capturable
    batch.learn(20 * 20, progress=False)
    alone = A2C("CartPole-v1", seed=SEEDS[1], **cfg).learn(20 * 20, progress=False)
    x, y = tensors(alone), tensors(batch.agents[1])
    assert max((x[k] - y[k]).abs().max().item() for k in x) <= 1e-6
    assert alone.collector.episode_stats() == batch.agents[1].collector.episode_stats()


@pytest.mark.cuda
@pytest.mark.parametrize("algo", ["ddpg", "a2c_torch_env"])
def test_cuda_graphed_batches_equal_eager_batches(algo):
    """Graphed batches equal eager ones (float32, within 1e-4), and seed k of a graphed batch stays near its lone
    run (1e-3). DDPG's graphed batch also updates normalize_obs statistics (a third graph); that run is compared
    with its eager twin only. Its lone run differed by 4.6e-3 after 368 float32 updates on an H200, against
    1e-3 here. That is float32 rounding amplified by training, not a different computation: on the CPU in float32
    the same pair differs by 2.2e-4 with normalize_obs and by 9.5e-7 without (the batched statistics update sums
    in another order), and test_ddpg_seeds_in_worker_processes_step_together_and_equal_their_lone_runs checks the
    same config against its lone run in float64 on the CPU (1e-6)."""
    if algo == "ddpg":
        cls, env = DDPG, "Pendulum-v1"
        cfg, steps = dict(n_envs=2, hidden_sizes=(64, 64), batch_size=64, learning_starts=32, buffer_size=2000), 400
        cfgs = [{**cfg, "normalize_obs": True}, cfg]
    else:
        cls, env = A2C, "CartPole-v1"
        cfg, steps = dict(n_envs=16, n_steps=5, env_backend="torch"), 16 * 5 * 40
        cfgs = [cfg]
    off = {"use_cuda_graph": False} if cls is DDPG else {"cuda_graphs": False}
    for c in cfgs:
        graphed = SeedBatch(cls, env, SEEDS, device="cuda", **c).learn(steps, progress=False)
        eager = SeedBatch(cls, env, SEEDS, device="cuda", **off, **c).learn(steps, progress=False)
        for a, b in zip(eager.agents, graphed.agents):
            x, y = tensors(a), tensors(b)
            assert max((x[k] - y[k]).abs().max().item() for k in x) <= 1e-4
    alone = cls(env, seed=SEEDS[1], device="cuda", **cfg).learn(steps, progress=False)
    x, y = tensors(alone), tensors(graphed.agents[1])  # the last config: no normalize_obs for DDPG
    assert max((x[k] - y[k]).abs().max().item() for k in x) <= 1e-3
    if cls is A2C:  # the counter streams advanced inside the graph replays: one block draw per rollout
        streams = {"action_noise": steps // 16, "env_resets": 1 + steps // 16}
        assert [a.collector.state_dict()["streams"] for a in (*graphed.agents, *eager.agents, alone)] == [streams] * 5


def test_sigint_stops_every_seed_with_a_checkpoint_and_restores_the_handlers(tmp_path):
    import os
    import signal

    from rlkit.core.rundir import TrainingInterrupted

    before = signal.getsignal(signal.SIGINT)
    sent = []

    def interrupt_once(agent, metrics):
        if not sent:
            sent.append(agent.seed)
            os.kill(os.getpid(), signal.SIGINT)

    batch = SeedBatch(A2C, "CartPole-v1", SEEDS, device="cpu", n_envs=2, n_steps=8, hidden_sizes=(8,))
    dirs = [tmp_path / f"seed{s}" for s in SEEDS]
    with pytest.raises(TrainingInterrupted) as e:
        batch.learn(10_000, run_dirs=dirs, progress=False, log_interval=32, callback=interrupt_once)
    assert e.value.step == 32 and signal.getsignal(signal.SIGINT) == before
    for d, agent in zip(dirs, batch.agents):
        assert (d / "checkpoints" / "step_32.pt").exists() and agent.num_timesteps == 32


def test_a_non_finite_loss_of_one_seed_is_named_with_its_first_step():
    from rlkit.core.rollout import NonFiniteError

    batch = SeedBatch(A2C, "CartPole-v1", SEEDS, device="cpu", n_envs=4, n_steps=5, hidden_sizes=(8,),
                      env_backend="torch")
    with torch.no_grad():
        next(batch.agents[1].critic.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"a2c: non-finite .*first in the update at environment step 20 "
                                             r"\(found at the log of step 100\)"):
        batch.learn(100, progress=False, log_interval=10**9)


def test_stacked_adam_steps_each_seed_as_its_own_adam_and_refuses_what_it_cannot_stack():
    """One Adam on the [K, P] stack (DDPG's batched update) == each agent's own torch.optim.Adam, bitwise: with state
    carried in from steps taken alone, weight decay, a scheduler's extra group key, stepped as one tensor and as
    pieces (as on a GPU), and alone again afterwards. A
    group with a frozen parameter falls back to each agent's own step (the frozen one stays put); optimisers that
    differ in a setting or in their step counts are refused in one line."""

    from rlkit.core.seeds import ParamStack, StackedAdam

    torch.manual_seed(0)
    mods = [nn.Sequential(nn.Linear(3, 64), nn.Tanh(), nn.Linear(64, 2)) for _ in range(3)]
    refs = [copy.deepcopy(m) for m in mods]
    opts, ref_opts = ([torch.optim.Adam(m.parameters(), lr=1e-2, weight_decay=1e-3) for m in ms] for ms in (mods, refs))
    for o in opts:
        o.param_groups[0]["initial_lr"] = 1e-2  # what an lr scheduler adds
    x = torch.randn(5, 3)

    def step(ms, os_, stacked=None):
        for m in ms:
            ps = [p for p in m.parameters() if p.requires_grad]
            for p, g in zip(ps, torch.autograd.grad(m(x).pow(2).sum() + m[0].weight.sum(), ps)):
                p.grad.copy_(g) if p.grad is not None else setattr(p, "grad", g)
        if stacked is not None:
            stacked.step()
        else:
            for o in os_:
                o.step()

    for _ in range(2):  # alone first: the stack takes over their moments and step counts
        step(mods, opts), step(refs, ref_opts)
    stacked = StackedAdam(opts, ParamStack.of_modules(mods))
    assert stacked.stacked and len(stacked.opt.param_groups[0]["params"]) == 1  # one piece on the CPU
    for _ in range(2):
        step(mods, opts, stacked), step(refs, ref_opts)
    stacked = StackedAdam(opts, ParamStack.of_modules(mods), pieces=4)  # as on a GPU: 3 seeds x 386 values
    assert [p.numel() for p in stacked.opt.param_groups[0]["params"]] == [384, 384, 384, 6]  # 128-value multiples
    for _ in range(2):
        step(mods, opts, stacked), step(refs, ref_opts)
    for _ in range(2):  # alone again, from the moments the stack left in each agent's optimiser
        step(mods, opts), step(refs, ref_opts)
    for o, r in zip(opts, ref_opts):
        for (_, a), (_, b) in zip(o.state_dict()["state"].items(), r.state_dict()["state"].items()):
            assert all(torch.equal(a[k], b[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    for m, r in zip(mods, refs):
        assert all(torch.equal(p, q) for p, q in zip(m.parameters(), r.parameters()))

    frozen = [nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)) for _ in range(2)]
    for m in frozen:
        m[0].weight.requires_grad_(False)
    f_opts = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in frozen]
    fallback = StackedAdam(f_opts, ParamStack.of_modules(frozen))
    before = [m[0].weight.clone() for m in frozen]
    step(frozen, f_opts, fallback)
    assert not fallback.stacked and all(torch.equal(b, m[0].weight) for b, m in zip(before, frozen))

    two = [nn.Sequential(nn.Linear(3, 2)) for _ in range(2)]
    with pytest.raises(ValueError, match="differ in lr: seed 0 has 0.1, seed 1 0.2"):
        StackedAdam([torch.optim.Adam(m.parameters(), lr=lr) for m, lr in zip(two, (0.1, 0.2))],
                    ParamStack.of_modules(two))
    uneven = [torch.optim.Adam(m.parameters()) for m in two]
    step(two[:1], uneven[:1])
    with pytest.raises(ValueError, match="different numbers of steps: seed 0 1, seed 1 0"):
        StackedAdam(uneven, ParamStack.of_modules(two))


def test_a_stacks_views_pass_the_same_gradient_as_slices_of_it():
    """ParamStack.unflatten(param) (one split: one cat in backward) gives param the gradient that plain slices of
    it give, including zeros for a parameter the loss does not read and the sum over two uses of one parameter."""
    from rlkit.core.seeds import ParamStack

    torch.manual_seed(0)
    mods = [nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)) for _ in range(3)]
    stack = ParamStack.of_modules(mods)
    x = torch.randn(3, 5, 3)

    def loss(w1, b1, w2, b2):  # b2 unread; w1 read twice
        h = torch.tanh(torch.bmm(x, w1.transpose(1, 2)) + b1[:, None])
        return (torch.bmm(h, w2.transpose(1, 2)) ** 2).sum() + (w1 ** 3).sum()

    plain_slices = [stack.param[:, o:o + n].reshape(-1, *shape) for o, n, shape in stack.slots]
    (ours,) = torch.autograd.grad(loss(*stack.unflatten(stack.param)), [stack.param])
    (plain,) = torch.autograd.grad(loss(*plain_slices), [stack.param])
    assert torch.equal(ours, plain) and plain[:, -2:].abs().sum() == 0 and ours.abs().sum() > 0

    from rlkit.core.seeds import StackedAdam  # a step of the stack (in pieces) invalidates a loss built before it
    stacked = StackedAdam([torch.optim.Adam(m.parameters()) for m in mods], stack, pieces=2)
    stale = loss(*stack.unflatten(stack.param))
    stack.param.grad.copy_(ours)
    stacked.step()
    with pytest.raises(RuntimeError, match="modified inplace|inplace operation"):
        torch.autograd.grad(stale, [stack.param])


@pytest.mark.parametrize("impl", ["for-loop", "foreach", "fused", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_stacked_adam_in_pieces_steps_bit_for_bit_as_one_tensor(impl):
    """StackedAdam's pieces (its default on a GPU: ADAM_CHUNKS; here also 5 on the CPU) step exactly as the stack
    in one piece, with each of torch's Adam implementations (on CUDA: fused and capturable, as DDPG's)."""
    from rlkit.core.seeds import ParamStack, StackedAdam

    if impl == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    device = "cuda" if impl == "cuda" else "cpu"
    kw = {"for-loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True),
          "cuda": dict(fused=True, capturable=True)}[impl]
    torch.manual_seed(0)
    base = [nn.Sequential(nn.Linear(7, 300), nn.Tanh(), nn.Linear(300, 3)).to(device) for _ in range(4)]
    runs = []
    for pieces in (1, None if impl == "cuda" else 5):
        mods = [copy.deepcopy(m) for m in base]
        opts = [torch.optim.Adam(m.parameters(), lr=1e-2, **kw) for m in mods]
        stack = ParamStack.of_modules(mods)
        stacked = StackedAdam(opts, stack, pieces=pieces)
        assert (len(stacked.opt.param_groups[0]["params"]) == 1) == (pieces == 1)
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            stack.param.grad.copy_(torch.randn(stack.param.shape, generator=gen))
            stacked.step()
        runs.append((stack.param.detach().clone(), [o.state_dict()["state"] for o in opts]))
    (a, sa), (b, sb) = runs
    assert torch.equal(a, b)
    for x, y in zip(sa, sb):
        assert all(torch.equal(x[i][k], y[i][k]) for i in x for k in ("step", "exp_avg", "exp_avg_sq"))


def test_seed_streams_fill_each_row_from_its_own_stream_and_a_filler_draws_the_same():
    """fill_normal_ / fill_uniform_ write row k from seed k's stream, as torch.randn / torch.rand of the row's shape
    draw in seed k's lone run; filler(out, kind), which cuts the rows once for a tensor refilled at every step,
    draws exactly the same in place (interleaved kinds keep each stream's order); exact=False: one shared draw."""
    from rlkit.core.seeds import SeedStreams

    seeds = [4, 9, 13]

    def streams(exact: bool = True) -> SeedStreams:
        s = SeedStreams(torch.device("cpu"), exact, seeds)
        for seed in seeds:
            torch.manual_seed(seed)
            s.capture()
        return s

    for exact in (True, False):
        a, b = streams(exact), streams(exact)
        noise, u = torch.empty(3, 2, 4), torch.empty(3, 5, dtype=torch.float64)
        fill_noise, fill_u = b.filler(noise, "normal"), b.filler(u, "uniform")
        for _ in range(3):
            assert fill_noise() is noise and torch.equal(noise, a.fill_normal_(torch.empty(3, 2, 4)))
            assert fill_u() is u and torch.equal(u, a.fill_uniform_(torch.empty(3, 5, dtype=torch.float64)))
        if exact:  # row k: what seed k's lone run draws with the global generator
            for k, seed in enumerate(seeds):
                torch.manual_seed(seed)
                lone = [(torch.randn(2, 4), torch.rand(5, dtype=torch.float64)) for _ in range(3)]
                assert torch.equal(noise[k], lone[-1][0]) and torch.equal(u[k], lone[-1][1])
        else:
            assert not torch.equal(noise[0], noise[1])
