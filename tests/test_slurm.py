"""README's cluster sweep on a real Slurm (`hydra/launcher=cluster`, Hydra's submitit launcher): every run's
record is written; a job cancelled mid-training (scancel) and the sweep relaunched resumes from the checkpoint
and skips the finished runs; a job that reaches its time limit is requeued (max_num_timeout) and resumes; two
job arrays over the same runs train each run once (the run lock).

Marked `slurm` and skipped unless a Slurm answers: `.ci/slurm-up` starts a one-node one (CI runs it first).
Every job asks for one CPU and no GPU, so a two-CPU node runs two at once."""

import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from conftest import REPO
from test_sweep import _records

pytestmark = pytest.mark.slurm
CHECKPOINT_EVERY = 200  # methods/mechanics/loop.Resume
# Training steps of the tiny model's Textual Inversion (one image a step): long enough that a job cancelled at
# its first checkpoint is still training when Slurm kills it (KillWait after SIGTERM, which submitit ignores).
CANCEL_STEPS, REQUEUE_STEPS, OVERLAP_STEPS = 1200, 600, 300


@pytest.fixture(scope="module")
def partition() -> str:
    """The default partition of a Slurm that answers and has a node taking jobs; else the tests skip."""
    if not shutil.which("sinfo"):
        pytest.skip("no Slurm here (no sinfo); .ci/slurm-up starts a one-node one, as CI does")
    try:
        info = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.skip("Slurm does not answer (sinfo timed out); .ci/slurm-up starts a one-node one")
    if info.returncode:
        pytest.skip(f"Slurm does not answer (sinfo: {info.stderr.strip()}); .ci/slurm-up starts a one-node one")
    up = [p for p, state in (line.split() for line in info.stdout.splitlines()) if state in ("idle", "mix", "alloc")]
    if not up:
        pytest.skip(f"no Slurm node takes jobs (sinfo: {info.stdout.strip()!r})")
    return next((p for p in up if p.endswith("*")), up[0]).rstrip("*")


def cluster_sweep(mini_root, out, partition, name, methods, actions="salute", steps=3, sweep="sweep", launcher=()):
    """README's cluster sweep on the tiny model, CPU only: one job of one CPU per run. Textual Inversion alone
    trains on one image a step, so that it reaches its first checkpoint soon; `steps` may be a sweep too."""
    batch = ["method.train_batch_size=1"] if methods == "textual_inversion" else []
    return [sys.executable, "-m", "actionbench.run", "-m", f"method={methods}", f"action={actions}", "suite=actionbench",
            "model=tiny", f"method.max_train_steps={steps}", *batch, f"benchmark.root={mini_root}", "device=cpu",
            f"hydra.sweep.dir={out}/{sweep}", f"output_dir={out}/runs/${{method_name}}/${{action}}/steps${{method.max_train_steps}}",
            f"cache_dir={out}/cache",
            "hydra/launcher=cluster", f"hydra.launcher.partition={partition}", "hydra.launcher.gpus_per_node=null",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", f"hydra.launcher.name={name}", *launcher]


def job_logs(out, sweep="sweep", suffix="out") -> str:
    """Everything the sweep's jobs printed (submitit's per-task logs, every attempt of a requeued job)."""
    return "\n".join(p.read_text(errors="replace") for p in sorted((out / sweep).rglob(f"*_log.{suffix}")))


def resumed_at(log: str) -> list[int]:
    return [int(step) for step in re.findall(r"resuming from the checkpoint at step (\d+)", log)]


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds:.0f} s for {what}")
        time.sleep(1)


def test_cluster_sweep_writes_every_record_and_a_relaunch_skips_them(mini_root, tmp_path, partition):
    command = cluster_sweep(mini_root, tmp_path, partition, f"ab-{uuid.uuid4().hex[:8]}", "sd,textual_inversion", "salute")
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:] + job_logs(tmp_path, suffix="err")[-3000:]
    first = _records(tmp_path)
    assert sorted(first) == [f"runs/{m}/salute/steps3" for m in ("sd", "textual_inversion")]
    assert job_logs(tmp_path).count("Action ") == 2, "each run was a Slurm job of its own"
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _records(tmp_path) == first
    assert job_logs(tmp_path).count("already holds the complete record") == 2


def test_a_cancelled_job_resumes_from_its_checkpoint_when_the_sweep_is_relaunched(mini_root, tmp_path, partition):
    # Two runs, one job at a time: a short one that finishes, then a long one, cancelled at its first checkpoint.
    name = f"ab-{uuid.uuid4().hex[:8]}"
    command = cluster_sweep(mini_root, tmp_path, partition, name, "textual_inversion", steps=f"3,{CANCEL_STEPS}",
                            launcher=("hydra.launcher.array_parallelism=1",))
    trained = tmp_path / "runs" / "textual_inversion" / "salute" / f"steps{CANCEL_STEPS}" / "artifact"
    sweep = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (trained / "checkpoint.pt").is_file() or sweep.poll() is not None, 600, "the first checkpoint")
        assert sweep.poll() is None, sweep.communicate()[0][-3000:]
        subprocess.run(["scancel", f"--name={name}"], check=True)
        said = sweep.communicate(timeout=300)[0]
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode != 0, "the sweep reports the cancelled job: " + said[-2000:]
    assert not (trained / "trained.json").exists() and (trained / "checkpoint.pt").is_file(), "killed mid-training"
    before = _records(tmp_path)
    assert sorted(before) == ["runs/textual_inversion/salute/steps3"]

    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:] + job_logs(tmp_path, suffix="err")[-3000:]
    after = _records(tmp_path)
    assert sorted(after) == sorted(["runs/textual_inversion/salute/steps3", f"runs/textual_inversion/salute/steps{CANCEL_STEPS}"])
    assert after["runs/textual_inversion/salute/steps3"] == before["runs/textual_inversion/salute/steps3"], "skipped"
    log = job_logs(tmp_path)
    assert "already holds the complete record" in log
    assert resumed_at(log) and resumed_at(log)[-1] >= CHECKPOINT_EVERY, "training went on from its checkpoint"


def test_a_job_warned_of_its_time_limit_is_requeued_and_resumes(mini_root, tmp_path, partition):
    # Slurm warns a job `signal_delay_s` before its time limit with USR2 (submitit's --signal=USR2@N); submitit
    # then checkpoints the call, requeues the job (at most max_num_timeout times) and exits. Here the warning
    # is sent once the first training checkpoint exists, as `scancel --signal=USR2` (what Slurm's timer sends),
    # so that the test does not depend on how far a machine of some speed has got by Slurm's own warning (with a
    # limit of 10 minutes, submitit counts any warning as a timeout: it guarantees no more than limit - 10 min).
    name = f"ab-{uuid.uuid4().hex[:8]}"
    command = cluster_sweep(mini_root, tmp_path, partition, name, "textual_inversion", steps=REQUEUE_STEPS,
                            launcher=("hydra.launcher.timeout_min=10", "hydra.launcher.signal_delay_s=60",
                                      "hydra.launcher.max_num_timeout=1"))
    trained = tmp_path / "runs" / "textual_inversion" / "salute" / f"steps{REQUEUE_STEPS}" / "artifact"
    sweep = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (trained / "checkpoint.pt").is_file() or sweep.poll() is not None, 600, "the first checkpoint")
        subprocess.run(["scancel", "--signal=USR2", f"--name={name}"], check=True)
        said = sweep.communicate(timeout=600)[0]
    finally:
        if sweep.poll() is None:
            sweep.kill()
    errors = job_logs(tmp_path, suffix="err")
    assert sweep.returncode == 0, said[-3000:] + errors[-3000:]
    assert sorted(_records(tmp_path)) == [f"runs/textual_inversion/salute/steps{REQUEUE_STEPS}"]
    log = job_logs(tmp_path)  # submitit's own log lines go to the job's stdout (each also as a bare line)
    requeues = re.findall(r"^Requeued job \S+ \((\d+) remaining timeouts\)$", log, re.MULTILINE)
    assert requeues == ["0"], "requeued once, as allowed"
    steps = resumed_at(log)
    assert len(steps) == 1 and steps[0] >= CHECKPOINT_EVERY, "the requeued job went on from the checkpoint"


def test_two_job_arrays_over_the_same_runs_train_each_run_once(mini_root, tmp_path, partition):
    # One job at a time per array: both arrays start on the first run together; one of them finds it locked.
    sweeps = [cluster_sweep(mini_root, tmp_path, partition, f"ab-{uuid.uuid4().hex[:8]}", "textual_inversion", "salute,wave",
                            steps=OVERLAP_STEPS, sweep=sweep, launcher=("hydra.launcher.array_parallelism=1",))
              for sweep in ("sweep_a", "sweep_b")]
    running = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for command in sweeps]
    said = [process.communicate(timeout=900)[0] for process in running]
    assert all(process.returncode == 0 for process in running), "\n".join(s[-2000:] for s in said)
    assert sorted(_records(tmp_path)) == [f"runs/textual_inversion/{a}/steps{OVERLAP_STEPS}" for a in ("salute", "wave")]
    log = job_logs(tmp_path, "sweep_a") + job_logs(tmp_path, "sweep_b")
    assert "is running elsewhere" in log, "the arrays overlapped on a run"
    for action in ("salute", "wave"):
        assert log.count(f"textual_inversion on {action!r}: Action") == 1, f"{action} trained by one job only"
