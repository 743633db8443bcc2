"""Main-process cost of one vector step of A2C's Atari rollout (16 envs, n_steps 5: the "atari" preset), which
bounds an Atari run's speed: the main process waits for all workers every step, and the workers wait for it.

  --env cheap  a stand-in for the emulator that costs almost nothing, with the ALE's per-step info keys (lives and
               frame counters) and 4 stacked 84 x 84 uint8 frames: what remains is the host-side overhead of the
               vector env and the collector. --no-step-infos drops those keys, as rlkit's Atari training stack
               does (rlkit.core.atari.GameRecordsOnly; the stack itself is not public, so it is not used here);
  --env pong   PongNoFrameskip-v4 itself.
  --policy fake  random actions (no network), --policy real  the agent's Nature-CNN policy.

Prints main-process CPU time per vector step (time.process_time: this process only, so workers running on the
same cores do not count) and wall time per vector step, best of --repeats.

  PYTHONPATH=$PWD python experiments/atari_step_overhead.py --env cheap --vectorization async [--no-step-infos]
  PYTHONPATH=$PWD python experiments/atari_step_overhead.py --env pong --policy real --device cpu
"""
from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

import rlkit


class _Lives:
    def lives(self) -> int:
        return 0


class CheapAle(gym.Env):
    """84x84 frames, Pong's 6 actions, the ALE's per-step info keys; a game ends with probability 1/900 a step."""

    metadata: dict = {"render_modes": []}

    step_infos = True

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (84, 84), np.uint8)
        self.action_space = gym.spaces.Discrete(6)
        self.ale, self.t, self.frames = _Lives(), 0, 0
        self.frame = np.zeros((84, 84), np.uint8)

    def get_action_meanings(self) -> list[str]:
        return ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.frame, self._info(0)

    def step(self, action):
        self.t, self.frames = self.t + 1, self.frames + 4
        reward = float(self.np_random.random() < 0.02) - float(self.np_random.random() < 0.02)
        over = bool(self.np_random.random() < 1 / 900)
        return self.frame, reward, over, False, self._info(4 * self.t)

    def _info(self, episode_frames: int) -> dict:
        if not self.step_infos:
            return {}
        return {"lives": 0, "episode_frame_number": episode_frames, "frame_number": self.frames}


def cheap_atari() -> gym.Env:
    return gym.wrappers.FrameStackObservation(CheapAle(), 4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", choices=("cheap", "pong"), default="cheap")
    p.add_argument("--policy", choices=("fake", "real"), default="fake")
    p.add_argument("--vectorization", choices=("sync", "async"), default="async")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=2000, help="vector steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-step-infos", action="store_true", help="the cheap env returns empty per-step infos")
    a = p.parse_args()
    CheapAle.step_infos = not a.no_step_infos
    env = cheap_atari if a.env == "cheap" else "PongNoFrameskip-v4"
    agent = rlkit.A2C(env, seed=0, device=a.device, n_envs=16, n_steps=5, vectorization=a.vectorization,
                      image_obs=True)
    col, buf = agent.collector, agent.buffer
    g = torch.Generator(device=agent.device).manual_seed(0)
    n_act = int(agent.action_space.n)

    def fake(obs: torch.Tensor) -> torch.Tensor:
        return torch.randint(0, n_act, (obs.shape[0],), generator=g, device=obs.device)

    policy = fake if a.policy == "fake" else agent.actor.sample_actions
    for _ in range(10):
        col.collect(buf, policy)
    rollouts = max(1, a.steps // buf.n_steps)
    best = (float("inf"), float("inf"))
    for _ in range(a.repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(rollouts):
            col.collect(buf, policy)
        n = rollouts * buf.n_steps
        best = min(best, ((time.process_time() - c0) / n * 1e3, (time.perf_counter() - w0) / n * 1e3))
    print(f"env {a.env}, policy {a.policy}, {a.vectorization}, {agent.device}: main-process CPU {best[0]:.3f} "
          f"ms per vector step, wall {best[1]:.3f} ms (best of {a.repeats} x {n} vector steps of 16 envs)")
    agent.env.close()


if __name__ == "__main__":
    main()
