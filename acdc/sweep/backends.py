"""Where a sweep's thresholds run: this process, N local worker processes, or a Ray cluster.

Every backend takes the jobs left (`acdc.sweep.plan.ThresholdJob`) and calls `on_outcome` in
this process as each threshold finishes (the driver then updates sweep.json and prints a line).

- `run_here`: one threshold after the other in this process (`--jobs 1`, the default).
- `run_in_processes`: N worker processes (`--jobs N`), started with `spawn` (no state copied
  from this process), each fed one threshold at a time through its own pipe, so that a worker
  that dies (killed, out of memory) takes down nothing but its own threshold: the others go
  on, a replacement worker takes the remaining thresholds, and the lost one is reported; its
  decision log is in its directory, so the next `circuit sweep --resume` resumes it. Workers
  ignore Ctrl-C; the driver stops them (SIGTERM) and the resume continues from their logs.
- `run_on_ray`: one Ray task per threshold (`--ray ADDRESS`, `auto` or `local`). A task runs in
  a temporary directory on its node and sends the run directory's files back, which the
  driver writes into the sweep's layout, so the cluster needs no shared file system (but every
  node needs `circuit` installed and the model reachable under the same name or path). A task
  whose worker dies is retried by Ray; one that still fails is reported, and the resume runs its
  threshold again from the start (its log lived on the lost worker).

A user error in a run (`AcdcError`: the same for every threshold, such as a model that cannot be
loaded) stops the sweep: no new threshold starts, those running finish, and the error is raised.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from typing import Any, cast

from acdc.errors import AcdcError
from acdc.sweep.plan import ThresholdJob
from acdc.sweep.worker import (
    RunOptions,
    ThresholdOutcome,
    land,
    run_threshold,
    run_threshold_elsewhere,
)

OnOutcome = Callable[[ThresholdJob, ThresholdOutcome], None]
RAY_MISSING = "Ray is not installed: pip install 'circuit[ray]'"
PROBE_TIMEOUT_S = 5.0  # for a TCP answer from the address given
CONNECT_TIMEOUT_S = 60.0  # for ray.init once the address answers
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Failure:
    """A threshold this sweep could not finish (its worker died), to be rerun by a resume."""

    threshold: float
    message: str


class ThresholdError(AcdcError):
    """A user error in one threshold's run; it stops the sweep."""

    def __init__(self, threshold: float, message: str):
        super().__init__(f"threshold {threshold:g}: {message}")
        self.threshold = threshold


# --------------------------------------------------------------------------- this process


def run_here(jobs: list[ThresholdJob], options: RunOptions,
             on_outcome: OnOutcome) -> list[Failure]:
    """Every job in this process, in order; Ctrl-C during a search writes that run's partial
    files and stops the sweep (KeyboardInterrupt)."""
    for job in jobs:
        try:
            outcome = run_threshold(job, options)
        except AcdcError as error:
            raise ThresholdError(job.threshold, str(error)) from None
        on_outcome(job, outcome)
        if outcome.status == "interrupted":
            raise KeyboardInterrupt
    return []


# --------------------------------------------------------------------------- worker processes


def _serve(conn: Connection, options: RunOptions) -> None:
    """A worker process: run the jobs the driver sends until it sends None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what Ctrl-C stops
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `circuit` sets it, before torch
    while True:
        job = conn.recv()
        if job is None:
            return
        try:
            conn.send(("done", run_threshold(job, options)))
        except AcdcError as error:
            conn.send(("error", str(error)))
        except Exception as error:  # a bug: report it, keep serving
            conn.send(("crash", f"{type(error).__name__}: {error}"))


def run_in_processes(jobs: list[ThresholdJob], options: RunOptions, n: int,
                     on_outcome: OnOutcome) -> list[Failure]:
    """The jobs on `n` worker processes (see the module docstring)."""
    context = multiprocessing.get_context("spawn")
    pending = collections.deque(jobs)
    busy: dict[Connection, tuple[Any, ThresholdJob]] = {}
    idle: list[tuple[Connection, Any]] = []
    failures: list[Failure] = []
    stop: ThresholdError | None = None

    def start() -> tuple[Connection, Any]:
        parent, child = context.Pipe()
        process = context.Process(target=_serve, args=(child, options), daemon=True,
                                  name="circuit-sweep-worker")
        process.start()
        child.close()
        return parent, process

    def feed(conn: Connection, process: Any) -> None:
        if pending and stop is None:
            job = pending.popleft()
            conn.send(job)
            busy[conn] = (process, job)
        else:
            idle.append((conn, process))

    try:
        for _ in range(min(n, len(pending))):
            feed(*start())
        while busy:
            for ready in wait(list(busy)):
                conn = cast(Connection, ready)  # wait returns what it was given
                process, job = busy.pop(conn)
                try:
                    kind, value = conn.recv()
                except (EOFError, OSError):
                    process.join(STOP_TIMEOUT_S)
                    failures.append(Failure(job.threshold, f"its worker process died "
                                                           f"({_exit_reason(process.exitcode)})"))
                    conn.close()
                    if pending and stop is None:
                        feed(*start())
                    continue
                if kind == "done":
                    on_outcome(job, value)
                elif kind == "error":
                    stop = stop or ThresholdError(job.threshold, value)
                else:
                    failures.append(Failure(job.threshold, value))
                feed(conn, process)
    finally:
        for conn, _ in idle:
            _send_stop(conn)
        for process, _ in busy.values():
            process.terminate()  # Ctrl-C or an error here: the logs are on disk
        for process in [p for _, p in idle] + [p for p, _ in busy.values()]:
            process.join(STOP_TIMEOUT_S)
            if process.is_alive():
                process.kill()
    if stop is not None:
        raise stop
    return failures


def _send_stop(conn: Connection) -> None:
    try:
        conn.send(None)
    except (OSError, ValueError):
        pass  # the worker is gone already
    conn.close()


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "still running after it closed its pipe"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# --------------------------------------------------------------------------- Ray


def import_ray() -> Any:
    """The `ray` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise AcdcError(f"--ray: {RAY_MISSING}") from None
    return ray


def check_address(address: str) -> tuple[str, int] | None:
    """The host and port of a Ray address (`HOST:PORT` or `ray://HOST:PORT`); None for `auto`
    and `local`. A malformed address is a one-line error."""
    if address in ("auto", "local"):
        return None
    rest = address.removeprefix("ray://")
    host, colon, port = rest.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise AcdcError(f"--ray {address}: give the cluster's address as HOST:PORT (the head "
                        f"node's port, 6379 by default; ray://HOST:PORT for Ray Client), `auto` "
                        f"for the cluster this machine belongs to, or `local` to start one here")
    return host.strip("[]"), int(port)


def connect(ray: Any, address: str, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Connect to the Ray cluster at `address`, waiting a bounded time; True when this call
    initialised Ray (the caller shuts it down). An address that does not answer is a one-line
    error after at most `PROBE_TIMEOUT_S` seconds (nothing listening), or `timeout` (something
    listening that is not Ray)."""
    if ray.is_initialized():
        return False  # the caller's connection (a notebook, a test) serves
    target = check_address(address)
    if target is not None:
        try:
            socket.create_connection(target, timeout=PROBE_TIMEOUT_S).close()
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise AcdcError(f"--ray {address}: nothing answers at {target[0]}:{target[1]} "
                            f"({reason.lower()}); start the cluster (`ray start --head`) or "
                            f"check the address") from None
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address == "local":
        # In this thread: the processes of a local instance die with the thread that starts
        # them (Linux's parent-death signal), and starting one needs no bounded wait.
        ray.init(address="local", include_dashboard=False, **kwargs)
        return True
    kwargs["address"] = address
    result: dict[str, BaseException] = {}

    def init() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as error:  # reported below, in the caller's thread
            result["error"] = error

    thread = threading.Thread(target=init, name="ray-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise AcdcError(f"--ray {address}: Ray did not answer within {timeout:g} s; check that a "
                        f"Ray cluster of this Ray version runs there")
    if "error" in result:
        failure = result["error"]
        lines = str(failure).strip().splitlines() or [type(failure).__name__]
        if address == "auto" and isinstance(failure, ConnectionError):
            raise AcdcError("--ray auto: no running Ray cluster found from this machine; start "
                            "one (`ray start --head`), give its ADDRESS, or use --ray local")
        raise AcdcError(f"--ray {address}: cannot connect ({lines[0]}); a cluster with token "
                        f"authentication also needs RAY_AUTH_MODE=token here (and its token: "
                        f"`ray get-auth-token`)")
    return True


def _payload(job: ThresholdJob) -> ThresholdJob:
    """The job with the files a worker elsewhere needs from its directory."""
    names = {"resume": ("decisions.jsonl",), "evaluate": ("circuit.json", "run.yaml"),
             "new": ()}[job.action]
    files = {name: (job.out_dir / name).read_bytes() for name in names
             if (job.out_dir / name).is_file()}
    return replace(job, payload=files)


def run_on_ray(jobs: list[ThresholdJob], options: RunOptions, address: str,
               on_outcome: OnOutcome) -> list[Failure]:
    """One Ray task per job on the cluster at `address` (see the module docstring)."""
    ray = import_ray()
    ours = connect(ray, address)
    refs: dict[Any, ThresholdJob] = {}
    failures: list[Failure] = []
    stop: ThresholdError | None = None
    try:
        remote = ray.remote(num_cpus=1)(run_threshold_elsewhere)
        for job in jobs:
            refs[remote.remote(_payload(job), options)] = job
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                job = refs.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as error:  # a RayTaskError, or a worker lost for good
                    cause = getattr(error, "cause", None)
                    if isinstance(cause, AcdcError) or isinstance(error, AcdcError):
                        stop = stop or ThresholdError(job.threshold, str(cause or error))
                        for other in refs:
                            ray.cancel(other)
                    elif not isinstance(error, ray.exceptions.TaskCancelledError):
                        lines = str(cause or error).strip().splitlines() or [type(error).__name__]
                        failures.append(Failure(job.threshold, f"its Ray task failed "
                                                               f"({lines[-1]})"))
                    continue
                land(outcome, job)
                on_outcome(job, outcome)
    except BaseException:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    finally:
        if ours:
            ray.shutdown()
    if stop is not None:
        raise stop
    return failures
