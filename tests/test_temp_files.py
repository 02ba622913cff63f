"""Temp files of killed runs (issue 19): each names its writer's pid, and a run removes the ones whose
writer is dead when it starts, so an interrupted-then-resumed run leaves exactly the files of an
uninterrupted one, while a live concurrent writer's temp files are never touched.

The kill tests SIGKILL a subprocess at a chosen atomic write, right before its temp file would be renamed
onto the target (so the temp file is complete on disk and cannot be cleaned by its writer), then finish
the run in this process and compare the folder with an uninterrupted run's. No clocks, no sleeps."""
import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dpmot_bench.bench.store import ResultStore
from dpmot_bench.cli import main
from dpmot_bench.io import TEMP_NAME, atomic_path, remove_stale_temps

ROOT = Path(__file__).resolve().parents[1]
# Linux never hands out a pid >= PID_MAX_LIMIT (2^22), so this pid is dead for sure (checked below).
DEAD = 2 ** 22 + 1
RANDOM = "ab3_x9qz"  # tempfile's random part: 8 characters of [a-z0-9_]
# Fields of a result row that measure time (or name the commit) rather than results.
TIMING = {"wall_seconds", "sample_seconds", "per_sample_ms", "fit_seconds", "git_commit"}

# Prepended to a subprocess's code: os.replace SIGKILLs the process on its n-th rename onto the target
# (sys.argv[1], n = sys.argv[2]): the temp file is then written but not yet renamed.
KILL_AT_RENAME = """
import os, signal, sys
_target, _nth, _seen, _replace = os.path.abspath(sys.argv[1]), int(sys.argv[2]), [0], os.replace
def _replace_or_die(src, dst, *args, **kwargs):
    if os.path.abspath(dst) == _target:
        _seen[0] += 1
        if _seen[0] == _nth:
            os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst, *args, **kwargs)
os.replace = _replace_or_die
"""


def temp(directory: Path, target: str, pid: int | None) -> Path:
    """Create the temp file a writer ``pid`` (None: an old, pid-less version) of ``target`` would leave."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (f".{target}.{RANDOM}.tmp" if pid is None else f".{target}.{pid}.{RANDOM}.tmp")
    path.write_bytes(b"half a file")
    return path


def listing(root: Path) -> list[str]:
    """Every file under ``root`` (hidden ones included), as sorted relative paths."""
    return sorted(os.path.relpath(os.path.join(folder, name), root)
                  for folder, _, names in os.walk(root) for name in names)


def killed(code: str, target: Path, nth: int, *args: str, env: dict) -> int:
    """Run ``code`` in a subprocess killed at its ``nth`` rename onto ``target``; returns its pid, after
    checking that it died that way leaving its temp file of ``target`` behind."""
    with subprocess.Popen([sys.executable, "-c", KILL_AT_RENAME + code, str(target), str(nth), *args], cwd=ROOT,
                          env={**os.environ, **env, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True) as proc:
        stderr = proc.communicate(timeout=600)[1]
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed at {target}:\n{stderr[-3000:]}"
    left = sorted(target.parent.glob(f".{target.name}.{proc.pid}.*.tmp"))
    assert len(left) == 1 and TEMP_NAME.match(left[0].name), "the killed run must leave its temp file"
    return proc.pid


# ------------------------------------------------------------------------------------------ unit tests
def test_the_dead_pid_is_dead():
    with pytest.raises(ProcessLookupError):
        os.kill(DEAD, 0)


def test_atomic_path_names_the_writer(tmp_path):
    with atomic_path(tmp_path / "a.txt") as tmp:
        match = TEMP_NAME.match(tmp.name)
        assert match and match["name"] == "a.txt" and int(match["pid"]) == os.getpid()
        assert tmp.parent == tmp_path and tmp.exists()
        tmp.write_text("done")
    assert listing(tmp_path) == ["a.txt"]


def test_dead_writers_temps_go_live_ones_and_other_files_stay(tmp_path):
    sub = tmp_path / "figures"
    removed = [temp(tmp_path, "a.txt", DEAD), temp(sub, "q.png", DEAD),
               temp(sub, "quality-w2.png", None),  # the pid-less leftover: stale whatever its age
               temp(tmp_path, "b.2024", DEAD)]  # a target name that ends in digits
    kept = [temp(tmp_path, "a.txt", os.getpid()), temp(sub, "q.png", os.getpid())]
    for name in ("a.txt", ".hidden", "notes.tmp", ".a.txt.tmp", f".a.txt.{DEAD}.short.tmp",
                 f".a.txt.{DEAD}.{RANDOM}.tmp.bak", f"a.txt.{DEAD}.{RANDOM}.tmp", f".a.txt.{DEAD}.AB3_X9QZ.tmp"):
        (tmp_path / name).write_text("not a temp file of ours")
        kept.append(tmp_path / name)
    folder_like_a_temp = tmp_path / f".d.{DEAD}.{RANDOM}.tmp"
    folder_like_a_temp.mkdir()
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside_temp = temp(outside, "x.npz", DEAD)
    (tmp_path / "link").symlink_to(outside, target_is_directory=True)  # not followed
    before = listing(tmp_path)

    assert remove_stale_temps(tmp_path, recursive=False) == sorted(removed[i] for i in (0, 3))
    assert remove_stale_temps(tmp_path) == sorted(removed[1:3])
    assert listing(tmp_path) == sorted(set(before) - {str(p.relative_to(tmp_path)) for p in removed})
    assert all(p.exists() for p in kept) and folder_like_a_temp.is_dir() and outside_temp.exists()
    assert remove_stale_temps(tmp_path) == []
    assert remove_stale_temps(tmp_path / "missing") == []


def test_a_writer_owned_by_another_user_is_alive(tmp_path, monkeypatch):
    def kill(pid, sig):
        assert sig == 0
        raise PermissionError if pid == 1234 else ProcessLookupError

    monkeypatch.setattr(os, "kill", kill)
    other_user, dead = temp(tmp_path, "a.txt", 1234), temp(tmp_path, "a.txt", 4321)
    assert remove_stale_temps(tmp_path) == [dead] and other_user.exists()


def test_a_temp_that_cannot_be_deleted_is_skipped(tmp_path, monkeypatch):
    locked, stale = temp(tmp_path, "a.txt", DEAD), temp(tmp_path, "b.txt", DEAD)
    unlink = Path.unlink

    def refuse(self, missing_ok=False):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    assert remove_stale_temps(tmp_path) == [stale] and locked.exists()


def test_names_restricts_to_those_targets(tmp_path):
    mine = [temp(tmp_path, "x.npz", DEAD), temp(tmp_path, "x.npz", None)]
    others = [temp(tmp_path, "y.npz", DEAD), temp(tmp_path, "x.npz.extra", DEAD), temp(tmp_path, "x", DEAD),
              temp(tmp_path, "y.npz", None), temp(tmp_path, "x.npz", os.getpid()), temp(tmp_path / "sub", "x.npz", DEAD)]
    assert remove_stale_temps(tmp_path, names=["x.npz"], recursive=False) == sorted(mine)
    assert all(p.exists() for p in others)
    assert remove_stale_temps(tmp_path, names="x") == [others[2]]  # one name as a string


def test_the_result_store_removes_stale_temps_of_its_work_folder(tmp_path):
    stale = [temp(tmp_path / "cells", "c.json", DEAD), temp(tmp_path / "samples", "s.npz", None),
             temp(tmp_path, "rows.json", DEAD)]
    live = temp(tmp_path / "cells", "d.json", os.getpid())
    ResultStore(tmp_path, resume=True)
    assert not any(p.exists() for p in stale) and live.exists()


def test_saving_a_map_removes_only_its_own_stale_temps(tmp_path):
    from dpmot_bench.ot import GaussianSource, SemiDiscreteOT

    stale, live, other = temp(tmp_path, "m.npz", DEAD), temp(tmp_path, "m.npz", os.getpid()), temp(tmp_path, "n.npz", DEAD)
    ot = SemiDiscreteOT(GaussianSource(2), solver="adam-mc", max_iter=3).fit(torch.randn(5, 2))
    ot.save(tmp_path / "m.npz")
    assert not stale.exists() and live.exists() and other.exists() and (tmp_path / "m.npz").is_file()


def test_training_into_the_cache_removes_stale_temps_of_the_entry(tmp_path, monkeypatch):
    from dpmot_bench.models.registry import cached_model_path, lock_path, partial_path, train_cached
    from dpmot_bench.models.training import default_config

    monkeypatch.setenv("DPMOT_CACHE", str(tmp_path))
    config = replace(default_config("gmm-ring8"), steps=2)
    entry = cached_model_path("gmm-ring8", config)
    stale = [temp(entry.parent, entry.name, DEAD), temp(entry.parent, partial_path(entry).name, DEAD),
             temp(entry.parent, entry.name, None)]
    kept = [temp(entry.parent, entry.name, os.getpid()), temp(entry.parent, "digits-0123.pt", DEAD)]
    assert train_cached("gmm-ring8", config, progress=False, checkpoint_every=1)[0] == entry
    # the entry's lock file stays (a lock that a killed holder leaves is released by the OS, never stale)
    assert listing(entry.parent) == sorted([entry.name, lock_path(entry).name] + [p.name for p in kept])


# ------------------------------------------------------------------------------------------ kill tests
CLI = "import sys\nfrom dpmot_bench.cli import main\nsys.exit(main(sys.argv[3:]))\n"  # dpmot ARGS...


def report_rows(out: Path) -> list[str]:
    rows = json.loads((out / "results.json").read_text())["rows"]
    return sorted(json.dumps({k: v for k, v in row.items() if k not in TIMING}, sort_keys=True) for row in rows)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache):
    """The tiny suite's report, run once without interruption."""
    out = tmp_path_factory.mktemp("uninterrupted") / "R"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DPMOT_CACHE", cache)
        assert main(["report", "--suite", "tiny", "--out", str(out), "--quiet"]) == 0
    return out


# phase -> the file whose rename kills the run (relative to the report folder)
PHASES = {
    "cells": "work/samples/sample-gmm-ring8-euler.npz",  # inside a sampling cell, 7 of 13 cells done
    "maps": "work/maps/gmm-ring8-dpm-ot.npz",  # saving the first fitted OT map
    "figures": "figures/quality-w2.png",  # the first figure
    "index": "index.md",  # the last file of a report
}


@pytest.mark.parametrize("phase", PHASES)
def test_a_report_killed_then_resumed_leaves_the_files_of_an_uninterrupted_one(phase, tmp_path, monkeypatch,
                                                                               cache, uninterrupted):
    out = tmp_path / "R"
    killed(CLI, out / PHASES[phase], 1, "report", "--suite", "tiny", "--out", str(out), "--quiet",
                 env={"DPMOT_CACHE": cache})
    temp(out / "figures", "quality-w2.png", None)  # what a killed run of an older version left (the issue's)
    assert listing(out) != listing(uninterrupted)
    monkeypatch.setenv("DPMOT_CACHE", cache)
    assert main(["report", "--suite", "tiny", "--out", str(out), "--resume", "--quiet"]) == 0
    assert listing(out) == listing(uninterrupted)
    assert report_rows(out) == report_rows(uninterrupted)


def fit_and_save(checkpoint: str, out: str) -> np.ndarray:
    """A checkpointed OT fit and its saved map, as ``fit-ot --checkpoint C --out O`` does; returns h."""
    from dpmot_bench.ot import GaussianSource, SemiDiscreteOT

    targets = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    ot = SemiDiscreteOT(GaussianSource(2), solver="adam-mc", max_iter=6, checkpoint=checkpoint,
                        checkpoint_every=2).fit(targets)
    ot.save(out)
    return ot.h_.numpy()


FIT = "import sys\nfrom tests.test_temp_files import fit_and_save\nfit_and_save(sys.argv[3], sys.argv[4])\n"


@pytest.mark.parametrize("kill_at", ["checkpoint", "out"])
def test_an_ot_fit_killed_then_rerun_leaves_no_temp_files(kill_at, tmp_path):
    user = tmp_path / "user"  # the user's folder: only temps of the checkpoint's and the map's names go
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    foreign = temp(user, "notes.txt", DEAD)
    checkpoint, out = user / "ck.npz", user / "map.npz"
    # the checkpoint is written at iterations 2, 4, 6 and at the end: killed at iteration 4
    killed(FIT, checkpoint if kill_at == "checkpoint" else out, 2 if kill_at == "checkpoint" else 1,
           str(checkpoint), str(out), env={})
    h = fit_and_save(str(checkpoint), str(out))
    assert listing(user) == sorted(["ck.npz", "map.npz", "notes.txt", foreign.name])
    np.testing.assert_array_equal(h, fit_and_save(str(tmp_path / "ck2.npz"), str(tmp_path / "map2.npz")))


def test_training_killed_then_resumed_leaves_no_temp_files(tmp_path, monkeypatch):
    from dpmot_bench.models.training import load_checkpoint

    monkeypatch.setenv("DPMOT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "user"
    foreign = temp(folder, "other.pt", DEAD)
    out = folder / "m.pt"
    args = ["train", "--dataset", "gmm-ring8", "--steps", "4", "--checkpoint-every", "2", "--out", str(out), "--quiet"]
    killed(CLI, out, 2, *args, env={"DPMOT_CACHE": str(tmp_path / "cache")})  # at the step-4 checkpoint
    assert load_checkpoint(out)["step"] == 2
    assert main([*args, "--resume"]) == 0
    assert listing(folder) == sorted(["m.pt", foreign.name]) and load_checkpoint(out)["step"] == 4
