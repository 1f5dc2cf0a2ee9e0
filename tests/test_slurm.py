"""SLURM: torchrun's variables from SLURM's (hand-checked, and a real 2-process gloo group started the
way srun starts tasks), the batch scripts `target-ssl-submit` writes (their text, and their requeue
logic run by bash against fake `srun` / `scontrol`), and the submitit path with its DebugExecutor."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.slurm import expand_nodelist, torchrun_env_from_slurm
from target_ssl import submit
from target_ssl.submit import SlurmJob, ToolRun, _job_from_args, sbatch_script, time_minutes, tool_argv

REPO = Path(__file__).resolve().parents[1]


def test_expand_nodelist() -> None:
    assert expand_nodelist("gpu[001-003,010],cpu7") == ["gpu001", "gpu002", "gpu003", "gpu010", "cpu7"]
    assert expand_nodelist("node5") == ["node5"]
    assert expand_nodelist("rack[1-2]-n[08-09]") == ["rack1-n08", "rack1-n09", "rack2-n08", "rack2-n09"]
    assert expand_nodelist("a[9-11]") == ["a9", "a10", "a11"]  # no padding unless written with zeros


def test_env_from_slurm_task() -> None:
    # Task 13 of a 16-task step on 2 nodes (8 per node): the 6th GPU of the second node.
    env = {"SLURM_PROCID": "13", "SLURM_STEP_NUM_TASKS": "16", "SLURM_NTASKS": "16", "SLURM_LOCALID": "5",
           "SLURM_STEP_NODELIST": "gpu[007-008]", "SLURM_JOB_NODELIST": "gpu[007-008]", "SLURM_JOB_ID": "123456"}
    assert torchrun_env_from_slurm(env) == {"RANK": "13", "WORLD_SIZE": "16", "LOCAL_RANK": "5",
                                            "MASTER_ADDR": "gpu007", "MASTER_PORT": str(20000 + 3456)}
    # What the job sets is kept (e.g. the sbatch script's exports).
    kept = torchrun_env_from_slurm({**env, "MASTER_ADDR": "head", "MASTER_PORT": "29511"})
    assert (kept["MASTER_ADDR"], kept["MASTER_PORT"]) == ("head", "29511")
    # The batch script itself (sbatch sets no SLURM_STEP_NUM_TASKS) and one-task steps stay single.
    batch = {k: v for k, v in env.items() if k != "SLURM_STEP_NUM_TASKS"}
    assert torchrun_env_from_slurm(batch) is None
    assert torchrun_env_from_slurm({**env, "SLURM_STEP_NUM_TASKS": "1"}) is None
    assert torchrun_env_from_slurm({}) is None


_WORKER = """
import sys, torch
from engine.distributed import init_distributed, all_reduce_sum, cleanup_distributed
info = init_distributed("cpu")
total = all_reduce_sum(torch.tensor([float(info.rank + 1)]))
print(info.rank, info.world_size, info.local_rank, int(total.item()))
cleanup_distributed()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
def test_init_distributed_from_srun_variables() -> None:
    # Two processes with only SLURM's per-task variables (as srun sets them), no torchrun.
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    base.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "SLURM_STEP_NUM_TASKS": "2",
                 "SLURM_STEP_NODELIST": "localhost", "SLURM_JOB_ID": "7", "MASTER_PORT": str(_free_port())})
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER], env={**base, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert sorted(out.split() for out, _ in outs) == [["0", "2", "0", "3"], ["1", "2", "1", "3"]]


def test_time_minutes() -> None:
    assert time_minutes("72:00:00") == 4320
    assert time_minutes("90") == 90
    assert time_minutes("30:01") == 31  # minutes:seconds, seconds round up
    assert time_minutes("2-12") == 2 * 1440 + 12 * 60  # days-hours
    assert time_minutes("1-00:30:00") == 1440 + 30
    with pytest.raises(ConfigError, match="SLURM time"):
        time_minutes("3h")


def test_sbatch_script_srun() -> None:
    _, job = _job_from_args(["pretrain", "--nodes", "2", "--gpus-per-node", "4", "--partition", "gpu",
                             "--time", "12:00:00", "--qos", "high", "--", "--config", "a b.py"])
    text = sbatch_script(job)
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --partition=gpu", "#SBATCH --qos=high", "#SBATCH --time=12:00:00",
                 "#SBATCH --signal=USR1@120", "#SBATCH --requeue",
                 "srun python -m pretrain.cli --config 'a b.py' --resume auto", 'if [ "$status" -eq 75 ]; then'):
        assert line in text.splitlines(), line
    assert "--account" not in text and "torchrun" not in text


def test_sbatch_script_torchrun_and_resume_given() -> None:
    job = SlurmJob("train-seg", ["--resume", "runs/x/last.pth"], nodes=3, gpus_per_node=2, launch="torchrun")
    text = sbatch_script(job)
    assert "#SBATCH --ntasks-per-node=1" in text and "#SBATCH --signal=B:USR1@120" in text
    assert '--nnodes="$SLURM_NNODES" --nproc-per-node=2' in text
    assert "-m transfer.segmentation.cli --resume runs/x/last.pth &" in text  # the user's --resume, once
    assert tool_argv(job).count("--resume") == 1
    with pytest.raises(ConfigError, match="unknown tool"):
        SlurmJob("train-foo")


@pytest.mark.parametrize("path", sorted((REPO / "tools" / "slurm").glob("*.sbatch")), ids=lambda p: p.name)
def test_checked_in_scripts_are_what_the_generator_writes(path: Path) -> None:
    lines = path.read_text().splitlines()
    prefix = "# target-ssl-submit "
    assert lines[1].startswith(prefix)
    argv = shlex.split(lines[1][len(prefix):])
    assert path.read_text() == sbatch_script(_job_from_args(argv)[1], command_line=argv)


def _fake_bin(folder: Path, srun_exit: int) -> dict[str, str]:
    folder.mkdir()
    log = folder / "calls.txt"
    (folder / "srun").write_text(f"#!/bin/bash\necho srun \"$@\" >> {log}\nexit {srun_exit}\n")
    (folder / "scontrol").write_text(f"#!/bin/bash\nif [ \"$1\" = show ]; then echo n1; exit 0; fi\necho scontrol \"$@\" >> {log}\n")
    for f in ("srun", "scontrol"):
        (folder / f).chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}", "SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "n1",
            "SLURM_NNODES": "1"}


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("launch", ["srun", "torchrun"])
@pytest.mark.parametrize("srun_exit, requeued, script_exit", [(75, True, 0), (1, False, 1), (0, False, 0)])
def test_script_requeues_only_on_exit_75(tmp_path: Path, launch: str, srun_exit: int, requeued: bool, script_exit: int) -> None:
    script = tmp_path / "job.sbatch"
    script.write_text(sbatch_script(SlurmJob("train-det", ["--config", "c.py"], gpus_per_node=2, launch=launch)))
    env = _fake_bin(tmp_path / "bin", srun_exit)
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    calls = (tmp_path / "bin" / "calls.txt").read_text().splitlines()
    assert done.returncode == script_exit, done.stderr
    assert calls[0].startswith("srun ") and "transfer.detection.cli --config c.py --resume auto" in calls[0]
    assert ("scontrol requeue 42" in calls) == requeued


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_torchrun_script_forwards_the_signal_and_requeues(tmp_path: Path) -> None:
    # SLURM sends B:USR1 to the script: it must SIGTERM the step (torchrun stops its workers), wait
    # for it and requeue, whatever torchrun's exit status.
    script = tmp_path / "job.sbatch"
    script.write_text(sbatch_script(SlurmJob("pretrain", [], gpus_per_node=2, launch="torchrun")))
    env = _fake_bin(tmp_path / "bin", 0)
    srun = tmp_path / "bin" / "srun"
    log = tmp_path / "bin" / "calls.txt"
    srun.write_text(f"#!/bin/bash\ntrap 'kill $!; echo srun got TERM >> {log}; exit 143' TERM\n"
                    f"echo srun \"$@\" >> {log}\nsleep 20 > /dev/null 2>&1 & wait\n")
    proc = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while not (log.exists() and log.read_text().startswith("srun")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    proc.communicate(timeout=30)
    calls = log.read_text().splitlines()
    assert proc.returncode == 0
    assert "srun got TERM" in calls and calls[-1] == "scontrol requeue 42"


_FAKE_TOOL = """
def main(argv):
    if argv[0] == "stop":
        raise SystemExit(75)  # what RunInterrupted is
    if argv[0] == "fail":
        raise SystemExit(2)
    return {"argv": argv}
"""


@pytest.fixture
def fake_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "fake_tool_cli.py").write_text(_FAKE_TOOL)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(submit.TOOLS, "pretrain", "fake_tool_cli")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    return "fake_tool_cli"


def test_tool_run_exit_codes(fake_tool: str) -> None:
    assert ToolRun(fake_tool, ["go"])() == {"argv": ["go"]}
    assert ToolRun(fake_tool, ["stop"])() == {"interrupted": True, "exit_code": 75}
    with pytest.raises(SystemExit) as e:
        ToolRun(fake_tool, ["fail"])()
    assert e.value.code == 2


def test_submitit_debug_executor(fake_tool: str, tmp_path: Path) -> None:
    submitit = pytest.importorskip("submitit")
    executor = submitit.DebugExecutor(folder=str(tmp_path / "logs"))
    job = submit.submit_submitit(SlurmJob("pretrain", ["go"], gpus_per_node=1, time="10"), executor=executor)
    assert job.result() == {"argv": ["go", "--resume", "auto"]}
    stopped = submit.submit_submitit(SlurmJob("pretrain", ["stop"], gpus_per_node=1, time="10"), executor=executor)
    assert stopped.result()["exit_code"] == 75
