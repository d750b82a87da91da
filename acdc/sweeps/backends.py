"""Where a sweep's thresholds run: this process, N local worker processes, or a Ray cluster.

Every backend takes the jobs left (`acdc.sweeps.plan.ThresholdJob`) and calls `on_outcome` in
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
  threshold again from the start (its log lived on the lost worker). The connection
  (`connect_ray`) is made before the sweep writes anything, and bounded: nothing listening is
  one line within `PROBE_TIMEOUT_S`, a server that is not Ray (it does not answer an HTTP/2
  preface as gRPC servers do) one line at once, a Ray that does not answer one line after the
  timeout (`--ray-timeout`); Ray's own log lines stay out of the terminal unless asked for.

A user error in a run (`AcdcError`: the same for every threshold, such as a model that cannot be
loaded) stops the sweep: no new threshold starts, those running finish, and the error is raised.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from typing import Any, cast

from acdc.core.files import MAX_GRAPH_FILE_BYTES, read_bytes
from acdc.errors import AcdcError
from acdc.sweeps.plan import ThresholdJob
from acdc.sweeps.worker import (
    RunOptions,
    ThresholdOutcome,
    land,
    run_threshold,
    run_threshold_elsewhere,
)

OnOutcome = Callable[[ThresholdJob, ThresholdOutcome], None]
RAY_MISSING = "Ray is not installed: pip install 'circuit[ray]'"
PROBE_TIMEOUT_S = 5.0  # for a TCP answer from the address given
RAY_TIMEOUT_S = 20.0  # default --ray-timeout: Ray's own default wait for a cluster
MAX_RAY_TIMEOUT_S = 3600.0
JOIN_GRACE_S = 1.0  # past the timeout, for Ray's last try to end
RAY_GCS_WAIT = "RAY_gcs_server_port_wait_time_s"  # Ray's tries (one a second) for the GCS
# an HTTP/2 client's first bytes: the preface, then an empty SETTINGS frame (length 0, type 4)
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
HTTP2_SETTINGS = 4  # the frame type an HTTP/2 (gRPC) server answers a preface with
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


@dataclass
class RayConnection:
    """A connection to a Ray cluster, made before the sweep writes anything. `ours`: this
    sweep connected, and `close` disconnects (a connection the caller made stays open)."""

    ray: Any
    address: str
    ours: bool

    def close(self) -> None:
        if self.ours:
            self.ours = False
            with _ray_output(verbose=False):
                self.ray.shutdown()


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
    if (not colon or not host or len(address) > 300 or not port.isdigit() or len(port) > 5
            or not 0 < int(port) < 65536):
        raise AcdcError(f"--ray {address[:80]}: give the cluster's address as HOST:PORT (the "
                        f"head node's port, 6379 by default; ray://HOST:PORT for Ray Client), "
                        f"`auto` for the cluster this machine belongs to, or `local` to start one "
                        f"here")
    return host.strip("[]"), int(port)


def check_timeout(timeout: float) -> None:
    """`--ray-timeout` must be a number of seconds from 1 to `MAX_RAY_TIMEOUT_S`."""
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout)
            and 1 <= timeout <= MAX_RAY_TIMEOUT_S):
        raise AcdcError(f"--ray-timeout {timeout!r}: give a number of seconds from 1 to "
                        f"{MAX_RAY_TIMEOUT_S:g}")


def connect_ray(address: str, timeout: float = RAY_TIMEOUT_S,
                verbose: bool = False) -> RayConnection:
    """Connect to the Ray cluster at `address` (HOST:PORT, ray://HOST:PORT, `auto` or `local`),
    waiting at most about `timeout` seconds; every failure is one `AcdcError` line: Ray not
    installed, a malformed address, nothing listening (within `PROBE_TIMEOUT_S`), a server
    there that is not Ray (an HTTP server: at once), no answer from Ray within `timeout`, Ray's
    own refusal. Ray's log lines (its core writes them to this process's stderr) are kept out of
    the terminal unless `verbose`."""
    target = check_address(address)
    check_timeout(timeout)
    ray = import_ray()
    if ray.is_initialized():
        return RayConnection(ray, address, ours=False)  # the caller's (a notebook, a test)
    if target is not None:
        _probe(address, *target)
    kwargs: dict[str, Any] = {"log_to_driver": verbose,
                              "logging_level": logging.INFO if verbose else logging.ERROR}
    if address == "local":
        # In this thread: the processes of a local instance die with the thread that starts
        # them (Linux's parent-death signal), and starting one needs no bounded wait.
        with _ray_output(verbose):
            try:
                ray.init(address="local", include_dashboard=False, **kwargs)
            except Exception as error:
                raise AcdcError(f"--ray local: cannot start a Ray instance here "
                                f"({_first_line(error)})") from None
        return RayConnection(ray, address, ours=True)
    kwargs["address"] = address
    result: dict[str, BaseException] = {}

    def init() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as error:  # reported below, in the caller's thread
            result["error"] = error

    given = os.environ.get(RAY_GCS_WAIT)  # Ray tries the cluster once a second this many times
    if given is None:
        os.environ[RAY_GCS_WAIT] = str(max(1, math.ceil(timeout)))
    try:
        with _ray_output(verbose):
            thread = threading.Thread(target=init, name="ray-connect", daemon=True)
            thread.start()
            thread.join(timeout + JOIN_GRACE_S)
    finally:
        if given is None:
            os.environ.pop(RAY_GCS_WAIT, None)
    if thread.is_alive() or (isinstance(result.get("error"), ConnectionError)
                             and target is not None):
        raise AcdcError(f"--ray {address}: no Ray cluster answered within {timeout:g} s "
                        f"(--ray-timeout); check that a Ray {ray.__version__} cluster runs there "
                        f"and that ADDRESS is its head node's (port 6379 by default)")
    if "error" in result:
        failure = result["error"]
        if address == "auto" and isinstance(failure, ConnectionError):
            raise AcdcError("--ray auto: no running Ray cluster found from this machine; start "
                            "one (`ray start --head`), give its ADDRESS, or use --ray local")
        raise AcdcError(f"--ray {address}: cannot connect ({_first_line(failure)}); a cluster "
                        f"with token authentication also needs RAY_AUTH_MODE=token here (and its "
                        f"token: `ray get-auth-token`)")
    return RayConnection(ray, address, ours=True)


def _probe(address: str, host: str, port: int) -> None:
    """Something must listen at the address, and speak HTTP/2 as Ray's gRPC servers do: an
    HTTP/1 server or any other answer is refused at once, not after the timeout."""
    try:
        sock = socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise AcdcError(f"--ray {address}: nothing answers at {host}:{port} "
                        f"({reason.lower()}); start the cluster (`ray start --head`) or "
                        f"check the address") from None
    with sock:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return  # a TLS server answers nothing readable to a plain preface
        try:
            sock.sendall(HTTP2_PREFACE)
            head = sock.recv(9)
        except OSError:
            return  # no answer in time: Ray's own connection decides, within the timeout
    if len(head) >= 4 and head[3] == HTTP2_SETTINGS:
        return
    what = "it answers like a web server" if head.startswith((b"HTTP/", b"<")) else (
        "it closed the connection" if not head else "it does not speak gRPC")
    raise AcdcError(f"--ray {address}: something listens at {host}:{port}, but not Ray ({what}); "
                    f"give the head node's address (port 6379 by default; ray://HOST:10001 for "
                    f"Ray Client)")


@contextlib.contextmanager
def _ray_output(verbose: bool) -> Iterator[None]:
    """Ray's core writes its log lines to this process's stderr (file descriptor 2), past
    Python's logging: while Ray connects or disconnects they go to a discarded file instead,
    unless `verbose`."""
    if verbose:
        yield
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield  # no stderr to protect
        return
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[0][:200]


def _payload(job: ThresholdJob) -> ThresholdJob:
    """The job with the files a worker elsewhere needs from its directory."""
    names = {"resume": ("decisions.jsonl",), "evaluate": ("circuit.json", "run.yaml"),
             "new": ()}[job.action]
    files = {name: read_bytes(job.out_dir / name, "a file of the threshold's run",
                              MAX_GRAPH_FILE_BYTES)
             for name in names if (job.out_dir / name).is_file()}
    return replace(job, payload=files)


def run_on_ray(jobs: list[ThresholdJob], options: RunOptions, connection: RayConnection | str,
               on_outcome: OnOutcome) -> list[Failure]:
    """One Ray task per job on the cluster of `connection` (an address: connected here, and
    disconnected at the end; see the module docstring)."""
    if isinstance(connection, str):
        connection = connect_ray(connection)
        close = connection.close
    else:
        def close() -> None:
            pass
    ray = connection.ray
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
                                                               f"({lines[-1][:200]})"))
                    continue
                land(outcome, job)
                on_outcome(job, outcome)
    except BaseException:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    finally:
        close()
    if stop is not None:
        raise stop
    return failures
