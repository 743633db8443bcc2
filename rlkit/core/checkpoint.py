"""Atomic save and safe load of a whole training state.

File format: MAGIC (8 bytes) + SHA-256 of the payload (32 bytes) + the payload written by torch.save.
  * Save goes to a temporary file in the same directory, is fsync'ed, then os.replace()d over the target:
    an interrupted save leaves the previous checkpoint byte-identical and no partial file.
  * Load checks the magic, the length and the digest before unpickling (truncated, empty, random or
    bit-flipped files are refused with the reason), then uses torch.load(weights_only=True), which refuses
    pickled callables and arbitrary classes.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

MAGIC = b"RLKITCK1"
FORMAT_VERSION = 1
_HEADER = len(MAGIC) + 32


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: the message names the file and the reason."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write `payload` (tensors, numbers, strings, lists, dicts) to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buf)
    data = buf.getvalue()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC)
            f.write(hashlib.sha256(data).digest())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def load_checkpoint(
    path: str | os.PathLike, algo: str | None = None, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read and verify a checkpoint. `algo` (if given) must match the algorithm that wrote it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e.strerror}") from None
    if len(raw) == 0:
        raise CheckpointError(f"checkpoint {path} is empty")
    if raw[: len(MAGIC)] != MAGIC:
        raise CheckpointError(f"checkpoint {path} is not an rlkit checkpoint (bad header)")
    if len(raw) <= _HEADER:
        raise CheckpointError(f"checkpoint {path} is truncated ({len(raw)} bytes)")
    digest, data = raw[len(MAGIC) : _HEADER], raw[_HEADER:]
    if hashlib.sha256(data).digest() != digest:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated (checksum mismatch)")
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - the unpickler's errors are many; all mean "unusable"
        raise CheckpointError(f"checkpoint {path} holds objects that cannot be loaded safely: {e}") from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"checkpoint {path} has no rlkit payload")
    if payload["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {payload['format_version']}; this rlkit reads {FORMAT_VERSION}"
        )
    if algo is not None and payload.get("algo") != algo:
        raise CheckpointError(f"checkpoint {path} was written by {payload.get('algo')!r}, not {algo!r}")
    return payload


def peek_algo(path: str | os.PathLike) -> str:
    """The algorithm name stored in a checkpoint (verifies the file)."""
    algo = load_checkpoint(path).get("algo")
    if not isinstance(algo, str):
        raise CheckpointError(f"checkpoint {path} names no algorithm")
    return algo


def rotate_checkpoints(directory: str | os.PathLike, keep: int, pattern: str = "step_*.pt") -> list[Path]:
    """Delete all but the newest `keep` files matching `pattern` (by the step number in the name).
    `best.pt` and `final.pt` never match the default pattern, so they are kept. Returns the deleted paths."""
    d = Path(directory)
    files = sorted(d.glob(pattern), key=lambda p: int("".join(c for c in p.stem if c.isdigit()) or 0))
    doomed = files[:-keep] if keep > 0 else files
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed
