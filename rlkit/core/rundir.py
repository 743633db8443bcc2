"""A run directory belongs to one run: path checks, a lock file held while training, stale temp-file cleanup,
and the stop signals (SIGINT/SIGTERM) that end a run with a checkpoint instead of killing it mid-step.

Layer 0: standard library only, so agent_io (which opens runs) and the CLI (which reports them) can both use it.
Every error is a RunDirError (a ValueError) whose one-line message names the path.
"""
from __future__ import annotations

import errno
import os
import signal
import socket
import threading
from pathlib import Path
from types import FrameType
from typing import Any

LOCK_NAME = ".rlkit.lock"
# Files that only a run writes: their presence means the directory already holds a run.
RUN_FILES = ("progress.csv", "config.json", "result.json")


class RunDirError(ValueError):
    """A run directory that cannot be used (a file, under a file, read-only, full, in use, or another run's)."""


class TrainingInterrupted(KeyboardInterrupt):
    """learn() stopped on SIGINT/SIGTERM after finishing its current iteration and writing a checkpoint.

    A KeyboardInterrupt, so code that already handles Ctrl-C keeps working. `exit_code` is 128 + signum
    (130 for SIGINT, 143 for SIGTERM); `checkpoint` is None when the run had no run directory."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None, run_dir: Path | None) -> None:
        self.signum, self.step, self.checkpoint, self.run_dir = signum, step, checkpoint, run_dir
        self.exit_code = 128 + signum
        where = f"; checkpoint {checkpoint}" if checkpoint is not None else "; no run directory, nothing saved"
        super().__init__(f"training interrupted by {signal_name(signum)} at environment step {step:,}{where}")


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def os_reason(e: OSError) -> str:
    """A short reason for an OSError: its strerror (e.g. 'No space left on device'), else its text."""
    return e.strerror or str(e) or type(e).__name__


def check_run_dir_path(path: str | os.PathLike) -> Path:
    """Refuse a run directory that is a file or lies under a file, before anything is built."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise RunDirError(f"run directory {p} is a file, not a directory")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunDirError(f"run directory {p} lies under {parent}, which is a file")
            break
    return p


def previous_run_files(path: str | os.PathLike) -> list[str]:
    """Names (relative to `path`) of files a previous run left there: progress.csv, config.json, result.json,
    TensorBoard event files and checkpoints. Empty for a new or empty directory."""
    p = Path(path)
    if not p.is_dir():
        return []
    found = [n for n in RUN_FILES if (p / n).exists()]
    found += sorted(x.name for x in p.glob("events.out.tfevents.*"))
    ck = p / "checkpoints"
    if ck.is_dir():
        found += sorted(f"checkpoints/{x.name}" for x in ck.glob("*.pt"))
    return found


def latest_checkpoint(path: str | os.PathLike) -> Path | None:
    """The newest checkpoint of a run directory: final.pt, else the step_N.pt with the largest N."""
    ck = Path(path) / "checkpoints"
    if (ck / "final.pt").is_file():
        return ck / "final.pt"
    steps = [(int(x.stem[5:]), x) for x in ck.glob("step_*.pt") if x.stem[5:].isdigit()]
    return max(steps)[1] if steps else None


def clean_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Delete temp files an interrupted save left (a SIGKILL between mkstemp and os.replace): the checkpoint
    temps `.NAME.pt.*.tmp` and the CSV rewrite's temp. Call only while holding the run's lock, so no live save
    is writing them. Returns the deleted paths."""
    p = Path(path)
    doomed = list(p.glob(".*.tmp")) + list(p.glob("*.csv.tmp"))
    if (p / "checkpoints").is_dir():
        doomed += list((p / "checkpoints").glob(".*.tmp"))
    for x in doomed:
        x.unlink(missing_ok=True)
    return doomed


def _process_start(pid: int) -> str:
    """The start time of `pid` (Linux /proc), so a recycled pid is not taken for the run that held the lock."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except (OverflowError, ValueError):
        return False
    return True


class RunDirLock:
    """`<run_dir>/.rlkit.lock` holding "pid host start-time", created exclusively (O_EXCL) while a run trains.

    A lock whose process is gone (same host, pid dead or recycled) is stale and is taken over; a live one is
    refused with a RunDirError naming the pid. release() removes it only if it is still ours."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._token = f"{os.getpid()} {socket.gethostname()} {_process_start(os.getpid())}\n"
        self.held = False

    def acquire(self) -> "RunDirLock":
        for _ in range(3):  # a stale lock is removed and creation retried
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._live_holder()
                if holder is not None:
                    raise RunDirError(f"run directory {self.run_dir} is in use by another run ({holder}; lock file "
                                      f"{self.path}); wait for it to end or choose another run directory") from None
                self.path.unlink(missing_ok=True)
                continue
            except OSError as e:
                raise RunDirError(f"cannot use run directory {self.run_dir}: {os_reason(e)}") from None
            try:
                os.write(fd, self._token.encode())
                os.fsync(fd)
            except OSError as e:
                os.close(fd)
                self.path.unlink(missing_ok=True)
                raise RunDirError(f"cannot use run directory {self.run_dir}: {os_reason(e)}") from None
            os.close(fd)
            self.held = True
            return self
        raise RunDirError(f"cannot take the lock {self.path}: it keeps reappearing (another run starting?)")

    def _live_holder(self) -> str | None:
        """'pid N on HOST' if the lock's process still runs (or runs on another host: cannot tell), else None."""
        try:
            fields = self.path.read_text().split()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise RunDirError(f"cannot read the lock file {self.path}: {os_reason(e)}") from None
        if len(fields) < 2 or not fields[0].isdigit():
            return None  # empty or garbled: a writer died between create and write
        pid, host = int(fields[0]), fields[1]
        if host != socket.gethostname():
            return f"pid {pid} on host {host}; remove the lock file if that run is gone"
        if not _pid_alive(pid):
            return None
        if len(fields) >= 3 and fields[2] and _process_start(pid) not in ("", fields[2]):
            return None  # the pid was recycled by an unrelated process
        return f"pid {pid}"

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            if self.path.read_text() == self._token:
                self.path.unlink()
        except OSError:
            pass


def open_run_dir(run_dir: str | os.PathLike, resuming: bool) -> RunDirLock:
    """Create (if needed) and lock `run_dir` for one run, then delete stale temp files.

    A new run (`resuming` False) refuses a directory that already holds a run's files: appending a second run's
    rows to progress.csv and leaving its checkpoints beside the new ones would mix two runs."""
    p = check_run_dir_path(run_dir)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        reason = "a path component is a file" if e.errno in (errno.ENOTDIR, errno.EEXIST) else os_reason(e)
        raise RunDirError(f"cannot create run directory {p}: {reason}") from None
    lock = RunDirLock(p).acquire()
    try:
        if not resuming:
            old = previous_run_files(p)
            if old:
                shown = ", ".join(old[:3]) + (f" and {len(old) - 3} more" if len(old) > 3 else "")
                latest = latest_checkpoint(p)
                hint = f"resume it from {latest}" if latest is not None else "remove it"
                raise RunDirError(f"run directory {p} already holds a run ({shown}); {hint}, "
                                  "or choose another run directory")
        clean_stale_temp_files(p)
    except BaseException:
        lock.release()
        raise
    return lock


class StopSignals:
    """While installed, SIGINT and SIGTERM only record that a stop was asked for (`received`), so the training
    loop can finish its iteration, checkpoint and raise TrainingInterrupted. A second signal stops at once
    (KeyboardInterrupt for SIGINT, SystemExit(128 + signum) otherwise). Installs only in the main thread
    (Python delivers signals there); uninstall() puts the previous handlers back."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        for s in self.SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
            return
        self.uninstall()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def uninstall(self) -> None:
        for s, h in self._previous.items():
            try:
                signal.signal(s, h if h is not None else signal.SIG_DFL)
            except (ValueError, TypeError):
                pass
        self._previous = {}


def live_lock_holder(run_dir: str | os.PathLike) -> str | None:
    """'pid N' (or 'pid N on host H') when a live run holds `run_dir`'s lock, else None (no lock, or a stale one).
    Lets a grid runner (rlkit bench) report a run that is going on elsewhere instead of starting it twice."""
    return RunDirLock(run_dir)._live_holder()
