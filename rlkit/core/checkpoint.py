"""Atomic save and safe load of a whole training state.

File format: MAGIC (8 bytes) + SHA-256 of the payload (32 bytes) + the payload written by torch.save.
  * Save goes to a temporary file in the same directory, is fsync'ed, then os.replace()d over the target:
    an interrupted save leaves the previous checkpoint byte-identical and no partial file.
  * Save refuses a payload holding NaN/inf (NonFiniteError naming the key path and the file): a checkpoint is
    only ever written from a healthy state, so "the last checkpoint" is always one worth resuming.
  * A failed write (read-only file system, full disk, a path under a file) raises CheckpointWriteError naming the
    path and the reason; the temp file is removed and earlier checkpoints are untouched.
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

from rlkit.core.errors import NonFiniteError, first_non_finite

MAGIC = b"RLKITCK1"
FORMAT_VERSION = 1
_HEADER = len(MAGIC) + 32


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: the message names the file and the reason."""


class CheckpointWriteError(OSError):
    """The file system refused a checkpoint (full, read-only, a path under a file): names the file and the
    reason. An OSError, so callers that handle I/O errors keep handling it; `errno` is the original one."""


def _write_error(path: Path, e: OSError, note: str = "") -> CheckpointWriteError:
    where = f" ({e.filename})" if getattr(e, "filename", None) and str(e.filename) != str(path) else ""
    err = CheckpointWriteError(f"cannot write checkpoint {path}: {e.strerror or e}{where}{note}")
    err.errno = e.errno
    return err


def write_file_atomic(path: str | os.PathLike, data: bytes, note: str = "") -> Path:
    """Write `data` to `path` atomically (temp file, fsync, os.replace): checkpoints, and the run's env state
    beside them. An interrupted write leaves the previous file byte-identical and no temp file; when the file
    system refuses (ENOSPC, EROFS, EIO...) a CheckpointWriteError names the path (`note` appended)."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _write_error(path, e, note) from None
        raise
    return path


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write `payload` (tensors, numbers, strings, lists, dicts) to `path` atomically.

    Raises NonFiniteError (nothing written) if any floating tensor or float in it is NaN/inf, and
    CheckpointWriteError naming the path when the file system refuses the write."""
    path = Path(path)
    bad = first_non_finite(payload)
    if bad is not None:
        raise NonFiniteError(f"refusing to write checkpoint {path}: {bad} holds NaN/inf "
                             "(earlier checkpoints are untouched)")
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **_compact(payload)}, buf)
    data = buf.getvalue()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(path, e) from None
    return write_file_atomic(path, MAGIC + hashlib.sha256(data).digest() + data,
                             " (earlier checkpoints are intact)")


def _compact(obj: Any) -> Any:
    """The payload with every tensor that views a larger storage copied out: torch.save writes a view's whole
    storage, and an agent's parameters may be views of a flat vector or of the [K, P] tensor of a batch of seeds
    (rlkit.core.seeds), whose other rows do not belong in this agent's file."""
    if isinstance(obj, torch.Tensor):
        return obj.clone() if obj.untyped_storage().nbytes() > obj.numel() * obj.element_size() else obj
    if isinstance(obj, dict):
        return {k: _compact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and any(isinstance(v, (torch.Tensor, dict, list, tuple)) for v in obj):
        items = [_compact(v) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    return obj


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
    version = payload["format_version"]
    if type(version) is not int or version != FORMAT_VERSION:
        shown = version if type(version) is int else f"of type {type(version).__name__}"
        raise CheckpointError(f"checkpoint {path} has format version {shown}; this rlkit reads {FORMAT_VERSION}")
    if algo is not None and not (isinstance(payload.get("algo"), str) and payload["algo"] == algo):
        found = payload.get("algo")
        shown = repr(found) if isinstance(found, str) else f"an unnamed algorithm ({type(found).__name__})"
        raise CheckpointError(f"checkpoint {path} was written by {shown}, not {algo!r}")
    return payload


# The top-level keys every agent checkpoint has, with the types they must have. Newer writers may add keys:
# unknown keys are never refused, so checkpoints from a later rlkit with extra fields still load.
AGENT_PAYLOAD_SCHEMA: dict[str, tuple[type, ...]] = {
    "algo": (str,), "config": (dict,), "env_id": (str,), "seed": (int, type(None)), "spaces": (str,),
    "num_timesteps": (int,), "rng": (dict,), "state": (dict,),
}


def check_agent_payload(payload: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse (CheckpointError naming the key) a verified file whose content is not a complete agent state:
    a missing key or one of the wrong type would otherwise surface as a KeyError/TypeError deep in loading."""
    missing = [k for k in AGENT_PAYLOAD_SCHEMA if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a complete rlkit agent state: missing {', '.join(missing)}")
    for key, types in AGENT_PAYLOAD_SCHEMA.items():
        v = payload[key]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            want = " or ".join("None" if t is type(None) else t.__name__ for t in types)
            raise CheckpointError(f"checkpoint {path}: {key} must be {want}, got {type(v).__name__}")
    if payload["num_timesteps"] < 0:
        raise CheckpointError(f"checkpoint {path}: num_timesteps is negative ({payload['num_timesteps']})")
    if payload["seed"] is not None and payload["seed"] < 0:
        raise CheckpointError(f"checkpoint {path}: seed is negative ({payload['seed']})")
    if not all(isinstance(k, str) for k in payload["config"]):
        raise CheckpointError(f"checkpoint {path}: config has non-string keys")


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
