"""Shared fixtures: tiny datasets generated in the tests, never downloaded."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Callable

import numpy as np
import pytest

from safefql_core.data import Dataset

# A directory where the pipeline-built fixtures below are kept between runs (off unless set).
# tools/mutation.py sets it: every mutant runs its tests in a fresh pytest session, and building
# the bag, dataset and bundle again for each would cost more than the tests themselves.
FIXTURE_CACHE = "SAFEFQL_FIXTURE_CACHE"


def _source_digest() -> str:
    """A hash of everything that decides what the pipeline fixtures contain: the code of the
    packages that build them and this file (where their arguments are). A cached artefact is
    only reused while all of it is unchanged."""
    import offline_train
    import safefql_core
    digest = hashlib.sha256()
    for root in (Path(safefql_core.__file__).parent, Path(offline_train.__file__).parent):
        for path in sorted(root.rglob("*.py")):
            digest.update(path.relative_to(root.parent).as_posix().encode() + b"\0" + path.read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def pipeline_artefact(tmp_path_factory, name: str, build: Callable[[Path], None]) -> str:
    """`build(path)` writes the artefact `name` at `path` (a real pipeline step). With
    $SAFEFQL_FIXTURE_CACHE set, a copy built earlier by the same sources is reused; each session
    still gets a copy of its own in its tmp dir, so no test can alter the cached one."""
    path = tmp_path_factory.mktemp("pipeline") / name
    cache = os.environ.get(FIXTURE_CACHE)
    if not cache:
        build(path)
        return str(path)
    cached = Path(cache) / f"{name}-{_source_digest()}"
    if not cached.exists():
        Path(cache).mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache))
        build(staging / name)
        os.replace(staging / name, cached)  # atomic: a concurrent run sees all of it or nothing
        staging.rmdir()
    (shutil.copytree if cached.is_dir() else shutil.copy2)(cached, path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_boat_bag(tmp_path_factory) -> str:
    """12 episodes (4,800 transitions) of the boat's real behaviour mix, recorded as a rosbag2
    on the boat's topics by `offline_train.collect --format bag`; 4 of the episodes violate."""
    from offline_train import collect

    def build(path: Path) -> None:
        assert collect.main(["--episodes", "12", "--seed", "4", "--format", "bag", "--out", str(path),
                             "--no-progress"]) == 0
    return pipeline_artefact(tmp_path_factory, "tiny_bag", build)


@pytest.fixture(scope="session")
def tiny_boat_h5(tiny_boat_bag, tmp_path_factory) -> str:
    """`tiny_boat_bag` converted by `offline_train.convert`: the dataset, its attributes and the
    task spec they record all come from the pipeline a user runs."""
    from offline_train import convert

    def build(path: Path) -> None:
        assert convert.main(["--bag", tiny_boat_bag, "--out", str(path), "--no-progress"]) == 0
    return pipeline_artefact(tmp_path_factory, "tiny.h5", build)


DOMAIN_LOCKS = Path(tempfile.gettempdir()) / "safefql_ros_domains"
DOMAINS = range(1, 102)  # 0 is the default of real robots; above 101 the DDS ports clash on Linux
_held_domain: list[IO] = []  # the lock of this session's domain, held until the process exits


def allocate_domain() -> tuple[int, IO]:
    """A ROS domain id no concurrent test run on this machine holds: an exclusive `flock` on
    one file per id, held through the returned open file (the kernel drops it when the process
    ends, however it ends). Starts from the pid so concurrent runs rarely probe the same ids."""
    DOMAIN_LOCKS.mkdir(exist_ok=True)
    offset = os.getpid() % len(DOMAINS)
    for k in range(len(DOMAINS)):
        domain = DOMAINS[(offset + k) % len(DOMAINS)]
        lock = open(DOMAIN_LOCKS / f"{domain}.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return domain, lock
    raise RuntimeError(f"every ROS domain id in {DOMAINS} is held by a test run; set ROS_DOMAIN_ID yourself")


def pytest_configure(config) -> None:
    """Give this run a private ROS domain unless the caller chose one (`ROS_DOMAIN_ID=44`);
    subprocesses the tests start inherit it."""
    if not os.environ.get("ROS_DOMAIN_ID"):
        domain, lock = allocate_domain()
        _held_domain.append(lock)
        os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


@pytest.fixture(scope="module")
def ros():
    """rclpy on this run's private domain (pytest_configure) for a module of `ros` tests."""
    rclpy = pytest.importorskip("rclpy")
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.fixture(scope="session")
def bundle(tiny_boat_h5, tmp_path_factory) -> str:
    """A real SafeFQL bundle (20 steps, tiny networks) made by `fit` and `export` from the
    converted bag: what the node, launcher and replay tests load; its run lies beside it
    (`Path(bundle).parent / "run"`). Trained once per session (or reused from the cache)."""
    from offline_train import export, fit

    def build(root: Path) -> None:
        assert fit.main(["--data", tiny_boat_h5, "--out", str(root / "run"), "--steps", "20", "--no-progress",
                         "--set", "critic_hidden=[32,32]", "flow_hidden=[32,32]", "batch_size=64",
                         "flow_steps=3"]) == 0
        assert export.main(["--run", str(root / "run"), "--out", str(root / "bundle")]) == 0
    return str(Path(pipeline_artefact(tmp_path_factory, "tiny_bundle", build)) / "bundle")


def edited_bundle(bundle, tmp_path: Path, edit: Callable[[dict], object] | None = None,
                  text: str | None = None, name: str = "edited") -> Path:
    """A copy of `bundle` whose bundle.json is changed by `edit` (on the parsed document) or
    replaced by `text`: the malformed bundles the loader must refuse, each naming the fix.
    bundle.json is not among the checksummed files, so the copy fails only where edited."""
    copy = tmp_path / name
    shutil.copytree(bundle, copy)
    if text is None:
        doc = json.loads((copy / "bundle.json").read_text())
        if edit is not None:
            edit(doc)
        text = json.dumps(doc)
    (copy / "bundle.json").write_text(text)
    return copy


def override(bundle, **changes) -> dict:
    """RuntimeConfig arguments that run `bundle`'s decision (a Bundle or its directory) with
    `changes` (DecisionSettings.with_changes): a test of the runtime's mechanics with other
    candidates, fallbacks or stop action than the bundle records says so explicitly."""
    from safefql_core.bundle import Bundle, load_bundle
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, check=False)
    return {"decision": b.decision.with_changes(**changes), "override_decision": True}


def make_dataset(n: int = 20, obs_dim: int = 3, act_dim: int = 2, seed: int = 0, margins: bool = True) -> Dataset:
    rng = np.random.default_rng(seed)
    f = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    timeouts = np.zeros(n, np.float32)
    timeouts[n // 2 - 1] = timeouts[-1] = 1
    return Dataset(
        observations=f(n, obs_dim), next_observations=f(n, obs_dim),
        actions=np.clip(f(n, act_dim), -1, 1), rewards=f(n), costs=(rng.random(n) < 0.2).astype(np.float32),
        terminals=np.zeros(n, np.float32), timeouts=timeouts, margins=f(n) if margins else None,
    )


# What setup.py's data_files and packages need: everything else stays out of a colcon build.
PACKAGE_SOURCES = ("setup.py", "setup.cfg", "package.xml", "resource", "launch", "config", "safefql_core",
                   "offline_train", "safefql_ros")


@pytest.fixture(scope="session")
def colcon_install(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """This package built with `colcon build` in a scratch workspace, as on a ROS 2 machine:
    (install prefix of safefql_ros, environment to run it: PATH with this venv, no
    AMENT_PREFIX_PATH / PYTHONPATH of the caller's). Built once per session (~5 s)."""
    bin_dir = Path(sys.executable).parent
    colcon = shutil.which("colcon", path=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    if colcon is None:
        pytest.skip("colcon is not installed (pip install -c constraints.txt -r requirements.txt)")
    root, ws = Path(__file__).resolve().parents[1], tmp_path_factory.mktemp("colcon_ws")
    src = ws / "src" / "safefql_ros"
    src.mkdir(parents=True)
    for name in PACKAGE_SOURCES:
        if (root / name).is_dir():
            shutil.copytree(root / name, src / name, symlinks=True,  # as cloned: task_configs is a link
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(root / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("AMENT_PREFIX_PATH", "PYTHONPATH")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    build = subprocess.run([colcon, "build", "--base-paths", "src"], cwd=ws, env=env, capture_output=True,
                           text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return ws / "install" / "safefql_ros", env
