"""How many worker processes a sweep runs on this machine: bounded by its CPU cores and memory.

`--jobs N` asks for N local worker processes. Each is a Python process that loads torch and the
model, records the task's clean and corrupted runs and runs one ACDC search at a time (`worker`),
so workers beyond the machine only make every threshold slower and can exhaust its memory.
`choose_workers` takes the smallest of N, the thresholds left, the CPU cores this process may use
(divided by the threads each worker uses) and the workers the memory available now holds, and
says in one line which bound it took when that is fewer than asked.

A worker's memory is estimated from the model's configuration and the task file alone, before
anything is loaded (`worker_memory`): the Python runtime with torch (`RUNTIME_BYTES`, measured),
ACDC's own estimate of a run (`acdc.methods.acdc.memory`: the weights, every sender's recorded
outputs, the q/k/v caches, temporaries), and the recorded state the run is copied from, which
the worker keeps beside it. Text prompts are counted at `CHARS_PER_TOKEN` characters a token, more
tokens than the bundled tokenizers make, so that the estimate errs high. On a GPU the estimate
counts the host's memory only (the runtime and the weights on their way to the device).

(`--threads` is bounded by `acdc.core.configs.check_threads`: at most those cores.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from acdc.core.configs import available_cores, available_memory
from acdc.errors import AcdcError

RUNTIME_BYTES = 512 * 2**20  # a worker's Python, torch and TransformerLens: ~0.49 GB resident
CHARS_PER_TOKEN = 2  # text prompts, before a tokenizer is loaded: errs towards more tokens
BYTES_PER_NUMBER = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class Workers:
    """The worker processes to start (1: the thresholds run in this process) and, when that
    is fewer than asked for, the line saying why."""

    n: int
    note: str | None = None


def worker_memory(settings: Any, shape: Any) -> int:
    """Bytes one worker process holds for the sweep `settings` (a `SweepSettings`) on a model
    of this `ModelShape`: see the module docstring."""
    from acdc.core.graph import count_edges
    from acdc.methods.acdc.memory import estimate_memory

    run, spec = settings.run, settings.spec
    if run.device != "cpu":
        return RUNTIME_BYTES + shape.n_params_total * BYTES_PER_NUMBER.get(run.dtype, 4)
    senders = count_edges(shape.graph_shape(run.common.granularity))["senders"]
    tokens = prompt_tokens(spec, shape.n_ctx)
    # at positions, at most a group per token (and `other`): the task is not tokenised yet
    groups = 0 if run.common.positions == "none" else tokens + 1
    estimate = estimate_memory(shape, senders, spec.n_prompts, tokens,
                               BYTES_PER_NUMBER.get(run.dtype, 4), run.common.ablation,
                               n_groups=groups)
    recorded = estimate["caches"] + estimate["qkv"]  # the state every run starts from a copy of
    return RUNTIME_BYTES + estimate["total"] + recorded


def prompt_tokens(spec: Any, n_ctx: int) -> int:
    """The longest prompt of a task file (`TaskSpec`) in tokens, before tokenising: token ids
    counted, text at `CHARS_PER_TOKEN` characters a token, a generator's `seq_len` or its
    longest template; at most the model's context."""
    bos = 1 if spec.prepend_bos else 0
    if spec.generator is not None:
        given = spec.generator.get("seq_len")
        longest = given if isinstance(given, int) else (
            math.ceil(_longest_text(spec.generator) / CHARS_PER_TOKEN) + 8)
    else:
        longest = max((_tokens(text) for prompt in spec.prompts
                       for text in (prompt.clean, prompt.corrupt) if text is not None), default=1)
    return max(1, min(n_ctx, longest + bos))


def _tokens(text: Any) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) if isinstance(text, str) else len(text)


def _longest_text(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return max((_longest_text(item) for item in value), default=0)
    return 0


def choose_workers(requested: int, n_jobs: int, threads: int, settings: Any) -> Workers:
    """How many worker processes run `n_jobs` thresholds when `--jobs requested` is asked for
    (see the module docstring). `threads` is `--threads` (0: one a worker for small models)."""
    if requested < 1:
        raise AcdcError(f"--jobs {requested}: give at least 1")
    if requested == 1 or n_jobs <= 1:
        return Workers(1)
    from acdc.core.shapes import load_shape
    from acdc.run import cpu_threads

    shape = load_shape(settings.run.model)
    cores = available_cores()
    device = settings.run.device
    each = threads or (cpu_threads(shape, device) or cores if device == "cpu" else 1)
    by_cores = max(1, cores // each)
    need = worker_memory(settings, shape)
    free = available_memory()
    by_memory = max(1, free // need) if free is not None else requested
    n = min(requested, n_jobs, by_cores, by_memory)
    if n == min(requested, n_jobs):
        return Workers(n)
    why = "" if threads or each == 1 else ": PyTorch's default for a model this size"
    reasons = [f"{cores} CPU core{'s' if cores > 1 else ''} here ({each} thread"
               f"{'s' if each > 1 else ''} a worker{why})"]
    if free is not None:
        reasons.append(f"memory for {free // need} (about {need / 2**30:.1f} GiB each, "
                       f"{free / 2**30:.1f} GiB available)")
    what = (f"{n} worker processes" if n > 1 else
            "one threshold at a time in this process")
    return Workers(n, f"--jobs {requested}: running {what}: {'; '.join(reasons)}")
