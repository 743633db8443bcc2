"""rlkit's dependency rules, enforced by walking every import in the package. The layers and the modules allowed
to import gymnasium and tensorboard are read from setup.cfg's [rlkit:architecture] section, so the documented
architecture and the checked one are the same text."""
from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "rlkit"
_ARCH = configparser.ConfigParser()
_ARCH.read(ROOT / "setup.cfg")
_SECTION = _ARCH["rlkit:architecture"]
LAYERS = {m: int(k[len("layer"):]) for k, v in _SECTION.items() if k.startswith("layer") for m in v.split()}
GYM_ALLOWED = set(_SECTION["gymnasium_only_in"].split())
TB_ALLOWED = set(_SECTION["tensorboard_only_in"].split())


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names]
    return out


FILES = sorted(PKG.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_import_rules(path):
    rel = str(path.relative_to(ROOT))
    mods = imports(path)
    if rel.startswith("rlkit/core/"):
        me = path.stem
        for m in mods:
            assert not m.startswith(("rlkit.agents", "experiments", "tests", "rlkit.cli", "rlkit.bench")), (rel, m)
            if m.startswith("rlkit.core.") and me in LAYERS:
                other = m.split(".")[2]
                if other in LAYERS:
                    assert LAYERS[other] < LAYERS[me], f"{rel} (layer {LAYERS[me]}) imports {m} (layer {LAYERS[other]})"
    if rel.startswith("rlkit/agents/") and path.stem != "__init__":
        for m in mods:
            if m.startswith("rlkit.agents"):
                pytest.fail(f"agent {rel} imports another agent module {m}")
            if m.startswith("rlkit.") and not m.startswith("rlkit.core"):
                pytest.fail(f"agent {rel} imports {m}; agents import rlkit.core only")
    if any(m == "gymnasium" or m.startswith("gymnasium.") for m in mods):
        assert rel in GYM_ALLOWED or not rel.startswith("rlkit/core") and not rel.startswith("rlkit/agents"), \
            f"{rel} imports gymnasium; only {sorted(GYM_ALLOWED)} may"
    if any(m.startswith(("tensorboard", "torch.utils.tensorboard")) for m in mods):
        assert rel in TB_ALLOWED, f"{rel} imports tensorboard; only core/logger.py may"
    assert ".cuda()" not in path.read_text() or rel == "rlkit/core/device.py", f"{rel} calls .cuda(); use core/device"


def test_every_core_module_has_a_layer():
    for p in (PKG / "core").glob("*.py"):
        if p.stem != "__init__":
            assert p.stem in LAYERS, f"core module {p.name} has no layer in the architecture test"


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_inheritance_stops_at_nn_module_or_protocol(path):
    allowed = {"nn.Module", "Module", "Protocol", "Exception", "ValueError", "TypeError", "FloatingPointError",
               "argparse.ArgumentParser", "Enum", "NamedTuple", "RuntimeError", "KeyboardInterrupt",
               # the deliberate exceptions (rlkit.core.envs.SameStepSyncVectorEnv: it replaces only step();
               # SameStepAsyncVectorEnv: only step_async/step_wait, with its worker; WorkerVecEnv: Gymnasium's
               # VectorEnv interface over the slots of an EnvWorkers)
               "gym.vector.SyncVectorEnv", "gym.vector.AsyncVectorEnv", "gym.vector.VectorEnv",
               # environment wrappers (rlkit.core.atari): Gymnasium's own extension point for envs
               "gym.Wrapper"}
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for b in node.bases:
                name = ast.unparse(b)
                if name.startswith("Protocol[") or name.startswith("Generic["):
                    continue
                ok = name in allowed or name.endswith("Error") or name == "_UsageError"
                assert ok, f"{path.name}: class {node.name}({name}) — inheritance stops at nn.Module or a Protocol"


def test_experiments_use_only_the_public_surface():
    for p in (ROOT / "experiments").glob("*.py"):
        for m in imports(p):
            if m.startswith("rlkit."):
                assert m.split(".")[1] in {"cli", "presets", "bench"} or m.count(".") == 1, f"{p.name} imports {m}"
