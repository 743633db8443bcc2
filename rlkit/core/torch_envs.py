"""GPU-native classic control: batched torch versions of CartPole-v1, Pendulum-v1, MountainCar-v0 and
MountainCarContinuous-v0 (Gymnasium 1.x's classic_control physics, same TimeLimits), torch only.

TorchVecEnv steps N copies at once. Everything is a fixed-shape tensor on one device: the state [N, d], actions
[N] (Discrete) or [N, a] (Box), rewards, terminated/truncated flags and observations. step() never reads a
value back to the host, so it can later run inside a CUDA graph. Semantics are those of rlkit's Gymnasium path
(rlkit/core/envs.py: SAME_STEP autoreset): where an episode ends, the returned observation is already the reset
one and `final_obs` holds the true final observation; truncated means the TimeLimit was reached (it can be True
together with terminated, as gymnasium.wrappers.TimeLimit gives). tests/core/test_torch_envs.py steps each env
side by side with Gymnasium's.

RNG: one counter-based stream per vector env (rlkit.core.streams.CounterStream, keyed from numpy's
SeedSequence([seed, 0])), on its device. Every step draws one fixed-shape [N, d] block of uniforms (the candidate
reset states) and keeps the rows of the envs that ended, so a sub-env's reset state depends on the seed, N and
the step count, never on a host decision. The stream's counter is a device tensor advanced in place, so a CUDA
graph of step() needs no generator registered; the envs of many seeds draw as one (rlkit.core.seeds). The
spaces are Gymnasium objects that rlkit/core/envs.py attaches (this module does not import gymnasium).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol

import torch

from rlkit.core.streams import ENV_RESETS, CounterStream


class TorchStep(NamedTuple):
    """One vector step; every field a tensor on the env's device with leading dimension N."""
    obs: torch.Tensor  # float32 [N, obs_dim]: the reset observation where an episode ended
    reward: torch.Tensor  # [N] in the env's dtype
    terminated: torch.Tensor  # bool [N]
    truncated: torch.Tensor  # bool [N]: the TimeLimit was reached
    final_obs: torch.Tensor  # float32 [N, obs_dim]: the TRUE next observation of every env (before any reset)


class Physics(Protocol):
    """One classic-control system as pure batched functions; TorchVecEnv adds time limits, resets and RNG."""
    env_id: str
    max_episode_steps: int
    reset_low: tuple[float, ...]  # the state is drawn uniformly from [reset_low, reset_high) (Gymnasium's ranges)
    reset_high: tuple[float, ...]

    def step(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(next state [N, d], reward [N], terminated [N] bool)."""
        ...

    def observe(self, state: torch.Tensor) -> torch.Tensor:
        """The float32 observation [N, obs_dim] of a state."""
        ...


class CartPole:
    """Gymnasium 1.x's CartPoleEnv (euler integrator; reward 1 every step, including the
    terminating one, as with sutton_barto_reward=False, Gymnasium 1.x's default)."""
    env_id, max_episode_steps = "CartPole-v1", 500
    reset_low, reset_high = (-0.05,) * 4, (0.05,) * 4
    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    total_mass = masspole + masscart
    polemass_length = masspole * length
    theta_threshold_radians = 12 * 2 * math.pi / 360
    x_threshold = 2.4

    def step(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, x_dot, theta, theta_dot = state.unbind(1)
        force = (action.to(state.dtype) * 2.0 - 1.0) * self.force_mag  # action 1 -> +force_mag, 0 -> -force_mag
        costheta, sintheta = torch.cos(theta), torch.sin(theta)
        temp = (force + self.polemass_length * theta_dot.square() * sintheta) / self.total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * costheta.square() / self.total_mass))
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        nxt = torch.stack((x + self.tau * x_dot, x_dot + self.tau * xacc,
                           theta + self.tau * theta_dot, theta_dot + self.tau * thetaacc), dim=1)
        x, theta = nxt[:, 0], nxt[:, 2]
        terminated = ((x < -self.x_threshold) | (x > self.x_threshold)
                      | (theta < -self.theta_threshold_radians) | (theta > self.theta_threshold_radians))
        return nxt, torch.ones_like(x), terminated

    def observe(self, state: torch.Tensor) -> torch.Tensor:
        return state.to(torch.float32, copy=True)  # never an alias of the state, which step() updates in place


class Pendulum:
    """Gymnasium 1.x's PendulumEnv (g = 10). The torque is clipped in float32 and enters the
    cost and the update through float32 products, as NumPy computes them from the float32 action."""
    env_id, max_episode_steps = "Pendulum-v1", 200
    reset_low, reset_high = (-math.pi, -1.0), (math.pi, 1.0)
    max_speed, max_torque, dt, g, m, l = 8.0, 2.0, 0.05, 10.0, 1.0, 1.0  # noqa: E741 - Gymnasium's names

    def step(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        th, thdot = state.unbind(1)
        u = action.reshape(action.shape[0], -1)[:, 0].to(torch.float32).clamp(-self.max_torque, self.max_torque)
        th_norm = torch.remainder(th + math.pi, 2 * math.pi) - math.pi  # angle_normalize
        costs = th_norm.square() + 0.1 * thdot.square() + (torch.tensor(0.001, dtype=torch.float32) * u.square()).to(
            state.dtype)  # float32 * float32, as NumPy
        newthdot = thdot + (3 * self.g / (2 * self.l) * torch.sin(th)
                            + (3.0 / (self.m * self.l ** 2) * u).to(state.dtype)) * self.dt
        newthdot = newthdot.clamp(-self.max_speed, self.max_speed)
        newth = th + newthdot * self.dt
        return torch.stack((newth, newthdot), dim=1), -costs, torch.zeros_like(th, dtype=torch.bool)

    def observe(self, state: torch.Tensor) -> torch.Tensor:
        th, thdot = state.unbind(1)
        return torch.stack((torch.cos(th), torch.sin(th), thdot), dim=1).to(torch.float32)


class MountainCar:
    """Gymnasium 1.x's MountainCarEnv (goal_velocity 0; reward -1 every step)."""
    env_id, max_episode_steps = "MountainCar-v0", 200
    reset_low, reset_high = (-0.6, 0.0), (-0.4, 0.0)
    min_position, max_position, max_speed, goal_position, force, gravity = -1.2, 0.6, 0.07, 0.5, 0.001, 0.0025

    def step(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        position, velocity = state.unbind(1)
        velocity = velocity + ((action.to(state.dtype) - 1.0) * self.force
                               + torch.cos(3 * position) * (-self.gravity))
        velocity = velocity.clamp(-self.max_speed, self.max_speed)
        position = (position + velocity).clamp(self.min_position, self.max_position)
        velocity = velocity.masked_fill((position == self.min_position) & (velocity < 0), 0.0)
        terminated = (position >= self.goal_position) & (velocity >= 0.0)
        return torch.stack((position, velocity), dim=1), torch.full_like(position, -1.0), terminated

    def observe(self, state: torch.Tensor) -> torch.Tensor:
        return state.to(torch.float32, copy=True)  # never an alias of the state, which step() updates in place


class MountainCarContinuous:
    """Gymnasium 1.x's Continuous_MountainCarEnv (goal 0.45; reward 100 on reaching it minus
    0.1 * action^2 of the action as given, unclipped). Gymnasium stores the state as float32 after every step;
    so does this (a rounding that is part of the dynamics, also in a float64 env)."""
    env_id, max_episode_steps = "MountainCarContinuous-v0", 999
    reset_low, reset_high = (-0.6, 0.0), (-0.4, 0.0)
    min_action, max_action, min_position, max_position = -1.0, 1.0, -1.2, 0.6
    max_speed, goal_position, power = 0.07, 0.45, 0.0015

    def step(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        position, velocity = state.unbind(1)
        a32 = action.reshape(action.shape[0], -1)[:, 0].to(torch.float32)
        # NumPy's roundings, step for step: after the first step of an episode the state is float32 and so is the
        # arithmetic (a Python float operand is rounded to float32 first); cos(3 * position) is taken in float64;
        # an in-range action gives force * power in float32, a clipped one (a Python float) in float64; the first
        # step (a float64 reset state) runs in float64. Without this the float64 env drifts ~1e-6 from Gymnasium.
        f32, f64, dt = torch.float32, torch.float64, state.dtype
        rounded = position.to(f32).to(dt) == position  # float32-valued: not the first step of an episode
        three_p = torch.where(rounded, (3 * position.to(f32)).to(dt), 3 * position)
        slope = 0.0025 * torch.cos(three_p.to(f64))
        force32 = a32.clamp(self.min_action, self.max_action)
        clipped = force32 != a32
        dv_f32 = (force32 * torch.tensor(self.power, dtype=f32) - slope.to(f32)).to(f64)
        dv = torch.where(clipped, force32.to(f64) * self.power - slope, dv_f32)  # float64 [N]
        velocity = torch.where(rounded, (velocity.to(f32) + dv.to(f32)).to(dt), velocity + dv.to(dt))
        velocity = velocity.clamp(-self.max_speed, self.max_speed)
        moved = torch.where(rounded, (position.to(f32) + velocity.to(f32)).to(dt), position + velocity)
        position = moved.clamp(self.min_position, self.max_position)
        velocity = velocity.masked_fill((position == self.min_position) & (velocity < 0), 0.0)
        at_goal = torch.where(rounded, position.to(f32) >= torch.tensor(self.goal_position, dtype=f32),
                              position >= self.goal_position)
        terminated = at_goal & (velocity >= 0.0)
        a = a32.to(state.dtype)
        reward = terminated.to(state.dtype) * 100.0 - a.square() * 0.1
        nxt = torch.stack((position, velocity), dim=1).to(torch.float32).to(state.dtype)
        return nxt, reward, terminated

    def observe(self, state: torch.Tensor) -> torch.Tensor:
        return state.to(torch.float32, copy=True)  # never an alias of the state, which step() updates in place


PHYSICS: dict[str, type] = {p.env_id: p for p in (CartPole, Pendulum, MountainCar, MountainCarContinuous)}


def step_physics(physics: Physics, state: torch.Tensor, elapsed: torch.Tensor, actions: torch.Tensor,
                 fresh: torch.Tensor, max_episode_steps: int) -> TorchStep:
    """TorchVecEnv.step on its tensors: step N envs' `state` [N, d] and `elapsed` [N] in place with `actions`; the
    envs that end take the reset states `fresh` [N, d]. (rlkit.core.seeds steps the envs of many seeds at once.)"""
    nxt, reward, terminated = physics.step(state, actions)
    elapsed_next = elapsed + 1
    truncated = elapsed_next >= max_episode_steps  # gymnasium.wrappers.TimeLimit: also when terminated
    done = terminated | truncated
    final_obs = physics.observe(nxt)
    # in place: the state tensors stay put, so a CUDA graph captured around step() stays valid
    state.copy_(torch.where(done[:, None], fresh, nxt))
    elapsed.copy_(elapsed_next.masked_fill(done, 0))
    return TorchStep(physics.observe(state), reward, terminated, truncated, final_obs)


class TorchVecEnv:
    """N copies of one Physics on `device`, with TimeLimit, SAME_STEP autoreset by masking and a seeded counter
    stream for the reset states (see the module docstring). `single_observation_space` / `single_action_space` are
    the Gymnasium spaces (attached by rlkit.core.envs.make_vec_env); `dtype` is the state's (float64 for exact
    comparisons with Gymnasium, float32 for speed)."""

    def __init__(self, physics: Physics, num_envs: int, seed: int | None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, observation_space: Any = None, action_space: Any = None) -> None:
        self.physics, self.num_envs = physics, int(num_envs)
        self.device, self.dtype = torch.device(device), dtype
        self.env_id, self.max_episode_steps = physics.env_id, int(physics.max_episode_steps)
        self.single_observation_space, self.single_action_space = observation_space, action_space
        self._low = torch.tensor(physics.reset_low, dtype=dtype, device=self.device)
        self._span = torch.tensor(physics.reset_high, dtype=dtype, device=self.device) - self._low
        # seed None: a fresh nondeterministic stream, as Gymnasium's reset(seed=None) on a new env
        self.stream = CounterStream.seeded(seed, ENV_RESETS, self.device)
        self.state = torch.zeros(self.num_envs, len(physics.reset_low), dtype=dtype, device=self.device)
        self.elapsed = torch.zeros(self.num_envs, dtype=torch.int32, device=self.device)
        self.reset(seed)

    def draw_resets(self, steps: int | None = None) -> torch.Tensor:
        """The U[0, 1) draws [N, d] of the next step() (steps=T: of the next T steps, [T, N, d], in one call); the
        stream moves past them, so pass them on: step(actions, uniform=row t)."""
        return self.stream.uniform(self.state.shape, self.dtype, steps)

    def reset_states(self, u: torch.Tensor) -> torch.Tensor:
        """Reset states from U[0, 1) draws u [..., d]: Gymnasium's uniform(low, high) = low + (high - low) * u."""
        return self._low + self._span * u

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset every sub-env (re-keying the reset stream, at counter 0, when `seed` is given); the float32
        observations [N, d]."""
        if seed is not None:
            self.stream.reseed_(seed, ENV_RESETS)
        self.state.copy_(self.reset_states(self.draw_resets()))
        self.elapsed.zero_()
        return self.physics.observe(self.state)

    def step(self, actions: torch.Tensor, uniform: torch.Tensor | None = None) -> TorchStep:
        """Step every sub-env once; where one ended, its state becomes a fresh reset state (masking, no branch).
        `uniform`: this step's reset draws [N, d] when already taken by draw_resets(steps), else drawn here."""
        u = self.draw_resets() if uniform is None else uniform
        return step_physics(self.physics, self.state, self.elapsed, actions.to(self.device), self.reset_states(u),
                            self.max_episode_steps)

    def close(self) -> None:
        """Nothing to release (kept so the agents can close any env the same way)."""
