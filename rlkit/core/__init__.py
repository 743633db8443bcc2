"""rlkit.core: the shared pieces every agent stands on. Knows no agent.

Layers (a module imports only from lower layers; tests/test_architecture.py enforces it):
  [0] types, device, config   [1] returns, optim, distributions, losses, normalize
  [2] networks, buffers, envs [3] rollout, logger, checkpoint   [4] agent_io
(the same list as setup.cfg's [rlkit:architecture] section, which the test reads)
"""
