"""Exceptions shared across core layers (layer 0, so every layer may raise them), and the finiteness walk that
guards checkpoints: a NaN/inf must stop a run with a message naming where, never be saved."""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch


class NonFiniteError(FloatingPointError):
    """An environment or a network produced NaN/inf; the message names where and when."""


def iter_non_finite(tree: Any, prefix: str = "") -> Iterator[str]:
    """Key paths ("state.actor.net.0.weight") of floating tensors or floats holding NaN/inf in a nested
    dict/list/tuple of tensors and plain values."""
    if isinstance(tree, torch.Tensor):
        if (tree.is_floating_point() or tree.is_complex()) and tree.numel() and not bool(torch.isfinite(tree).all()):
            yield prefix or "<root>"
    elif isinstance(tree, float):
        if not math.isfinite(tree):
            yield prefix or "<root>"
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from iter_non_finite(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from iter_non_finite(v, f"{prefix}[{i}]")


def first_non_finite(tree: Any) -> str | None:
    """The first key path holding NaN/inf, or None when everything is finite."""
    return next(iter_non_finite(tree), None)
