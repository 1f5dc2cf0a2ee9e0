"""`target-ssl-submit`: run a tool on a SLURM cluster, one process per GPU, requeued on preemption.

    target-ssl-submit pretrain --nodes 2 --gpus-per-node 8 --partition learn --time 72:00:00 \\
        -- --config pretrain_configs/splitmask_vitb_coco.py --data-root /data/coco
    target-ssl-submit train-det --launcher sbatch --dry-run -- --config det_configs/...   # print the script

Everything after `--` goes to the tool, plus `--resume auto` (unless `--resume` is given), so a
requeued job continues from the newest checkpoint of its run folder.

Requeue: SLURM sends SIGUSR1 120 s before the time limit (`--signal-delay`) and SIGTERM at
preemption; every rank's trainer stops at the next step boundary, rank 0 writes a checkpoint and the
process exits 75 (`engine.guards.REQUEUE_EXIT_CODE`). Then:

* `--launcher sbatch` (needs nothing installed): a batch script (`sbatch_script`, written beside the
  logs and submitted with `sbatch`) runs `srun python -m <tool>` (`--sbatch-launch srun`, SLURM's
  variables read by `engine.slurm`) or `srun torchrun` once per node (`torchrun`); it calls
  `scontrol requeue` when the step exits 75 (or, under torchrun, when the script got the signal).
* `--launcher submitit` (`pip install submitit`): `ToolRun` is submitted with one task per GPU;
  submitit's own preemption signal (USR2) is turned into SIGTERM for the trainer, and rank 0 runs
  `scontrol requeue` when the tool exits 75; the requeued job runs the same pickled `ToolRun`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.guards import REQUEUE_EXIT_CODE

__all__ = ["TOOLS", "SlurmJob", "tool_argv", "sbatch_script", "ToolRun", "submit_submitit", "main"]

TOOLS = {
    "pretrain": "pretrain.cli",
    "train-det": "transfer.detection.cli",
    "train-seg": "transfer.segmentation.cli",
    "train-cls": "transfer.classification.cli",
}


@dataclasses.dataclass
class SlurmJob:
    """What to run and where (flags of `target-ssl-submit`)."""

    tool: str
    tool_args: list[str] = dataclasses.field(default_factory=list)
    nodes: int = 1
    gpus_per_node: int = 8
    cpus_per_task: int = 10
    partition: str | None = None
    time: str = "72:00:00"
    mem: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    job_name: str | None = None
    log_dir: str = "slurm_logs"
    signal_delay: int = 120
    launch: str = "srun"  # sbatch scripts: "srun" (one task per GPU) or "torchrun" (one per node)

    def __post_init__(self) -> None:
        if self.tool not in TOOLS:
            raise ConfigError(f"unknown tool {self.tool!r}; choose one of {', '.join(TOOLS)}")
        if self.launch not in ("srun", "torchrun"):
            raise ConfigError(f"--sbatch-launch must be srun or torchrun, got {self.launch!r}")
        if self.nodes < 1 or self.gpus_per_node < 1:
            raise ConfigError("--nodes and --gpus-per-node must be at least 1")
        time_minutes(self.time)  # validates

    @property
    def name(self) -> str:
        return self.job_name or f"target-ssl-{self.tool}"


def time_minutes(limit: str) -> int:
    """SLURM's time limit -> whole minutes (seconds round up): "minutes", "minutes:seconds",
    "hours:minutes:seconds", "days-hours", "days-hours:minutes", "days-hours:minutes:seconds"."""
    days, _, clock = limit.rpartition("-")
    try:
        parts = [int(p) for p in clock.split(":")]
        d = int(days) if days else 0
    except ValueError:
        raise ConfigError(f"--time {limit!r} is not a SLURM time (e.g. 72:00:00, 2-00:00:00, 90)") from None
    if len(parts) > 3:
        raise ConfigError(f"--time {limit!r} has too many fields (e.g. 72:00:00)")
    if days:  # after "days-" the clock starts with hours
        h, m, s = parts + [0] * (3 - len(parts))
    else:
        h, m, s = {1: [0, parts[0], 0], 2: [0, *parts], 3: parts}[len(parts)]
    return d * 1440 + h * 60 + m + (1 if s else 0)


def tool_argv(job: SlurmJob) -> list[str]:
    """The tool's arguments, with `--resume auto` unless the user chose what to resume."""
    args = list(job.tool_args)
    if not any(a == "--resume" or a.startswith("--resume=") for a in args):
        args += ["--resume", "auto"]
    return args


def _sbatch_header(job: SlurmJob, tasks_per_node: int, signal_spec: str) -> list[str]:
    options = [("job-name", job.name), ("nodes", job.nodes), ("ntasks-per-node", tasks_per_node),
               ("gpus-per-node", job.gpus_per_node), ("cpus-per-task", job.cpus_per_task), ("time", job.time),
               ("partition", job.partition), ("account", job.account), ("qos", job.qos),
               ("constraint", job.constraint), ("mem", job.mem), ("signal", signal_spec)]
    lines = [f"#SBATCH --{k}={v}" for k, v in options if v is not None]
    return lines + ["#SBATCH --requeue", "#SBATCH --open-mode=append",
                    f"#SBATCH --output={job.log_dir}/%x-%j.out"]


_RENDEZVOUS = """set -uo pipefail
export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
export MASTER_PORT="$((20000 + SLURM_JOB_ID % 20000))"
"""

_SRUN_BODY = """# One process per GPU: SIGUSR1 / SIGTERM reach every rank, which checkpoints and exits 75.
# At preemption SIGTERM comes to this script too: a trap (not an ignore, which srun would inherit)
# keeps it alive until the step has exited, to requeue.
trap 'echo "SIGTERM: waiting for the training step to checkpoint"' TERM
srun {command}
status=$?
if [ "$status" -eq {code} ]; then
    scontrol requeue "$SLURM_JOB_ID"   # the requeued job resumes with --resume auto
    exit 0
fi
exit "$status"
"""

_TORCHRUN_BODY = """# One torchrun per node; the signal comes to this script (B:), which forwards SIGTERM to torchrun
# (it gives its workers about 30 s to finish the step and write the checkpoint) and requeues.
stopping=0
trap 'stopping=1; kill -TERM "$pid" 2>/dev/null' USR1 TERM
srun torchrun --nnodes="$SLURM_NNODES" --nproc-per-node={gpus} --rdzv-backend=c10d \\
    --rdzv-id="$SLURM_JOB_ID" --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT" {command} &
pid=$!
wait "$pid"
status=$?
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; status=$?; done   # wait again after the trap
if [ "$status" -eq {code} ] || [ "$stopping" -eq 1 ]; then
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
fi
exit "$status"
"""


def sbatch_script(job: SlurmJob, python: str = "python", command_line: list[str] | None = None) -> str:
    """The batch script for `job` (see the module docstring), as text; `command_line` (the
    `target-ssl-submit` arguments that made it) is recorded in its second line."""
    module_args = " ".join(shlex.quote(a) for a in ["-m", TOOLS[job.tool], *tool_argv(job)])
    if job.launch == "srun":
        header = _sbatch_header(job, job.gpus_per_node, f"USR1@{job.signal_delay}")
        body = _SRUN_BODY.format(command=f"{python} {module_args}", code=REQUEUE_EXIT_CODE)
    else:
        header = _sbatch_header(job, 1, f"B:USR1@{job.signal_delay}")
        body = _TORCHRUN_BODY.format(gpus=job.gpus_per_node, command=module_args, code=REQUEUE_EXIT_CODE)
    made_by = [f"# target-ssl-submit {shlex.join(command_line)}"] if command_line is not None else []
    return "\n".join(["#!/bin/bash", *made_by, *header, "", _RENDEZVOUS + body])


def _job_number(job_id: str) -> int:
    """"12345" / "12345_7" (array task) -> 12345 / 123457: the same on every task of the job."""
    digits = "".join(ch for ch in str(job_id) if ch.isdigit())
    return int(digits) if digits else 0


def _env_from_submitit() -> None:
    """torchrun's variables from submitit's job environment (SLURM or the local executor)."""
    if "RANK" in os.environ or importlib.util.find_spec("submitit") is None:
        return
    import submitit

    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # called outside a submitit job (e.g. directly): nothing to set
        return
    if env.num_tasks <= 1:
        return
    os.environ.update({"RANK": str(env.global_rank), "WORLD_SIZE": str(env.num_tasks),
                       "LOCAL_RANK": str(env.local_rank), "MASTER_ADDR": env.hostnames[0],
                       "MASTER_PORT": os.environ.get("MASTER_PORT", str(20000 + _job_number(env.job_id) % 20000))})


class ToolRun:
    """The callable submitit runs on every task: the tool's `main(argv)`; exit 75 -> requeue."""

    def __init__(self, module: str, argv: list[str]) -> None:
        self.module = module
        self.argv = list(argv)

    def __call__(self) -> Any:
        _env_from_submitit()
        if hasattr(signal, "SIGUSR2"):
            # submitit's preemption signal: let the trainer stop at a step boundary like on SIGTERM.
            signal.signal(signal.SIGUSR2, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
        try:
            return importlib.import_module(self.module).main(self.argv)
        except SystemExit as e:
            if e.code != REQUEUE_EXIT_CODE:
                raise
            if os.environ.get("RANK", "0") == "0" and "SLURM_JOB_ID" in os.environ:
                subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=False, timeout=60)
            return {"interrupted": True, "exit_code": REQUEUE_EXIT_CODE}


def submit_submitit(job: SlurmJob, executor: Any | None = None) -> Any:
    """Submit `job` through submitit (`executor`: default an AutoExecutor on SLURM); returns the Job."""
    import submitit

    if executor is None:
        executor = submitit.AutoExecutor(folder=job.log_dir)
        extra = {k: v for k, v in (("account", job.account), ("qos", job.qos), ("constraint", job.constraint)) if v}
        executor.update_parameters(slurm_partition=job.partition, slurm_signal_delay_s=job.signal_delay,
                                   slurm_additional_parameters={"requeue": True, **extra},
                                   **({"slurm_mem": job.mem} if job.mem else {}))
    executor.update_parameters(name=job.name, nodes=job.nodes, tasks_per_node=job.gpus_per_node,
                               gpus_per_node=job.gpus_per_node, cpus_per_task=job.cpus_per_task,
                               timeout_min=time_minutes(job.time))
    return executor.submit(ToolRun(TOOLS[job.tool], tool_argv(job)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="target-ssl-submit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tool", choices=list(TOOLS))
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8, help="one process per GPU")
    p.add_argument("--cpus-per-task", type=int, default=10, help="CPU cores per process (data workers + 1)")
    p.add_argument("--partition", default=None)
    p.add_argument("--time", default="72:00:00", help="time limit, SLURM format")
    p.add_argument("--mem", default=None, help="memory per node, SLURM format (e.g. 480G)")
    p.add_argument("--account", default=None)
    p.add_argument("--qos", default=None)
    p.add_argument("--constraint", default=None)
    p.add_argument("--job-name", default=None)
    p.add_argument("--log-dir", default="slurm_logs", help="batch scripts and SLURM's logs")
    p.add_argument("--signal-delay", type=int, default=120, help="seconds between SIGUSR1 and the time limit")
    p.add_argument("--launcher", default="auto", choices=["auto", "submitit", "sbatch"],
                   help="auto: submitit when installed, else sbatch")
    p.add_argument("--sbatch-launch", default="srun", choices=["srun", "torchrun"],
                   help="sbatch scripts: srun one process per GPU, or torchrun once per node")
    p.add_argument("--dry-run", action="store_true", help="print what would be submitted, submit nothing")
    return p


def _job_from_args(argv: list[str]) -> tuple[argparse.Namespace, SlurmJob]:
    ours, tool_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = build_parser().parse_args(ours)
    job = SlurmJob(tool=args.tool, tool_args=tool_args, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                   cpus_per_task=args.cpus_per_task, partition=args.partition, time=args.time, mem=args.mem,
                   account=args.account, qos=args.qos, constraint=args.constraint, job_name=args.job_name,
                   log_dir=args.log_dir, signal_delay=args.signal_delay, launch=args.sbatch_launch)
    return args, job


def _submit_sbatch(job: SlurmJob, dry_run: bool, argv: list[str]) -> str:
    text = sbatch_script(job, python=shlex.quote(sys.executable), command_line=argv)
    if dry_run:
        print(text)
        return text
    path = Path(job.log_dir) / f"{job.name}.sbatch"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    out = subprocess.run(["sbatch", str(path)], capture_output=True, text=True)
    if out.returncode:
        raise ConfigError(f"sbatch {path} failed: {out.stderr.strip() or out.stdout.strip()}")
    print(out.stdout.strip())
    return text


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, job = _job_from_args(argv)
        launcher = args.launcher
        if launcher == "auto":
            launcher = "submitit" if importlib.util.find_spec("submitit") else "sbatch"
        if launcher == "sbatch":
            _submit_sbatch(job, args.dry_run, argv)
        elif args.dry_run:
            print(f"submitit: {job.nodes} node(s) x {job.gpus_per_node} task(s), {time_minutes(job.time)} min, "
                  f"partition {job.partition}; each task runs {TOOLS[job.tool]}.main({tool_argv(job)})")
        else:
            if not importlib.util.find_spec("submitit"):
                raise ConfigError("--launcher submitit needs `pip install submitit` (or use --launcher sbatch)")
            print(f"submitted job {submit_submitit(job).job_id}; logs in {job.log_dir}/")
    except ConfigError as e:
        raise SystemExit(f"target-ssl-submit: {e}") from None


def entry() -> None:
    """The console script."""
    main()


if __name__ == "__main__":
    main()
