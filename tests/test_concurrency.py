"""Two real processes at once: a second run into a report folder in use is refused (and deletes nothing of
the first's), and two processes needing the same cached model train it once, the second waiting for the
first and loading what it wrote. Processes meet at files (a barrier), never at wall-clock deadlines."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from dpmot_bench.cli import main

ROOT = Path(__file__).resolve().parent.parent
# Prepended to a subprocess's code: wait_here(name) writes <barrier>/<name>.inside and waits for
# <barrier>/<name>.go (written by the test) before going on.
BARRIER = """
import os, sys, time
from pathlib import Path
_barrier = Path(sys.argv[1])
def wait_here(name):
    (_barrier / f"{name}.inside").write_text(str(os.getpid()))
    for _ in range(6000):  # at most 10 minutes: a test that never releases fails instead of hanging
        if (_barrier / f"{name}.go").exists():
            return
        time.sleep(0.1)
    raise SystemExit("never released")
"""


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    for _ in range(6000):
        if path.exists():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the process ended before {path.name}:\n{proc.stderr.read()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"{path.name} never appeared")


REPORT_IN_A_CELL = """
from dpmot_bench.bench import tasks
from dpmot_bench.cli import main
first = tasks.TASKS["sample"]
def paused(ctx, cell):
    if not getattr(paused, "done", False):
        paused.done = True
        wait_here("cell")
    return first(ctx, cell)
tasks.TASKS["sample"] = paused
raise SystemExit(main(["report", "--suite", "tiny", "--quiet", "--out", sys.argv[2]]))
"""


def test_a_second_run_into_a_folder_in_use_is_refused(tmp_path, capsys):
    barrier, out = tmp_path / "barrier", tmp_path / "R"
    barrier.mkdir()
    first = subprocess.Popen([sys.executable, "-c", BARRIER + REPORT_IN_A_CELL, str(barrier), str(out)], cwd=ROOT,
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    wait_for(barrier / "cell.inside", first)
    cells_before = sorted(p.name for p in (out / "work" / "cells").iterdir())
    for command in ("report", "bench"):
        for resume in ([], ["--resume"]):
            code = main([command, "--suite", "tiny", "--quiet", "--out", str(out), *resume])
            err = capsys.readouterr().err
            assert code == 2 and f"is in use by another dpmot run (pid {first.pid})" in err, err
            assert err.count("\n") == 1
    assert sorted(p.name for p in (out / "work" / "cells").iterdir()) == cells_before  # nothing deleted
    (barrier / "cell.go").write_text("")
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    assert (out / "index.md").is_file()
    # the folder is free again once the run ends
    assert main(["report", "--suite", "tiny", "--quiet", "--out", str(out), "--resume"]) == 0


TRAIN_ONCE = """
import json
from dataclasses import replace
import torch
from dpmot_bench.models import registry, training
training._DEFAULTS["gmm-ring8"] = replace(training._DEFAULTS["gmm-ring8"], steps=60, n_train=2000)
real_train = registry.train_denoiser
def counted_train(*args, **kwargs):
    (_barrier / f"trained-by-{os.getpid()}").write_text("")
    if sys.argv[2] == "first":
        wait_here("training")
    return real_train(*args, **kwargs)
registry.train_denoiser = counted_train
if sys.argv[2] == "second":
    (_barrier / "second.started").write_text("")
D = registry.get_denoiser("gmm-ring8", "trained")
x = torch.linspace(-1, 1, 8).reshape(4, 2)
print(json.dumps(D(x, 0.3).tolist()))
"""


def test_two_processes_needing_one_cached_model_train_it_once(tmp_path):
    barrier, cache = tmp_path / "barrier", tmp_path / "cache"
    barrier.mkdir()
    env = {"DPMOT_CACHE": str(cache)}
    first = subprocess.Popen([sys.executable, "-c", BARRIER + TRAIN_ONCE, str(barrier), "first"], cwd=ROOT,
                             env={**os.environ, "OMP_NUM_THREADS": "1", **env}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    wait_for(barrier / "training.inside", first)  # the first holds the entry's lock and is training
    second = subprocess.Popen([sys.executable, "-c", BARRIER + TRAIN_ONCE, str(barrier), "second"], cwd=ROOT,
                              env={**os.environ, "OMP_NUM_THREADS": "1", **env}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    wait_for(barrier / "second.started", second)
    (barrier / "training.go").write_text("")
    outputs = []
    for proc in (first, second):
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    assert [p.name for p in barrier.glob("trained-by-*")] == [f"trained-by-{first.pid}"]
    assert torch.equal(torch.tensor(outputs[0]), torch.tensor(outputs[1]))
