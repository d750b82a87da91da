"""Position groups: which token positions of a task each positional edge speaks for.

A positional graph (`acdc.core.graph`, `--positions labels|all`) has every edge once per
position *group*. This module makes the groups of a task and says, for every prompt and token,
which group the token belongs to:

- `labels`: one group per label of the task (`Task.labels`: IO, S1, S1+1, S2, END ...), in the
  task's label order, then `other` (`acdc.core.tasks.labels.OTHER`) for every real token no
  label names. A prompt's padding (prompts are right-padded to the longest) belongs to no
  group.
- `all`: one group per token index `0..P-1`, named by the index (`"0"`, `"1"`, ...); the
  prompts must all have P tokens.

A task that cannot be grouped so is one `TaskError` line naming the fix. The assignment of a
task's tokens to groups is what a positional circuit depends on besides the graph, so files
record its digest (`positions_digest`): a circuit found on one task is not resumed or
evaluated on another whose labels fall elsewhere.

Some groups can never matter (`inert_groups`): with causal attention, a token after its
prompt's last metric position is read by no metric position, and under corrupt ablation a
token before the first position where the prompt's clean and corrupted tokens differ reads
the same in every circuit (every sender's live and ablated outputs there are the same, and so
are the heads' q, k and v). An edge at a group all of whose tokens are such is provably
without effect; ACDC removes the edges of such groups untested.

>>> from acdc.core.tasks.values import Task
>>> task = Task("t", "", "", None, "kl", 0.1, "corrupt", 0, [[5, 6, 7, 8]], [[5, 9, 7, 8]],
...             [[3]], None, None, labels=[{"S": 1, "END": 3}])
>>> group_names(task, "labels")
('S', 'END', 'other')
>>> group_of(task, ("S", "END", "other"), "labels")
[[2, 0, 2, 1]]
>>> inert_groups(task, ("S", "END", "other"), "labels", "corrupt", causal=True)
frozenset()
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from acdc.core.graph import POSITION_MODES, GraphShape
from acdc.core.tasks.labels import OTHER
from acdc.errors import AcdcError, TaskError

if TYPE_CHECKING:
    from acdc.core.tasks.spec import TaskSpec
    from acdc.core.tasks.values import Task

POSITIONS_HELP = ("Circuits that know where: none (every edge stands for all positions), "
                  "labels (one copy of every edge per task label, then `other`) or all (one "
                  "per token index; prompts of one length).")


def check_mode(mode: str) -> None:
    if mode not in POSITION_MODES:
        raise AcdcError(f"unknown positions {mode!r}: use one of {', '.join(POSITION_MODES)}")


def check_spec(spec: TaskSpec, mode: str) -> None:
    """Refuse `--positions labels` for a task file that labels nothing, before the model is
    loaded (the same line `group_names` gives once it is tokenised)."""
    check_mode(mode)
    if mode != "labels":
        return
    from acdc.core.generators.registry import GENERATORS

    generated = spec.generator is not None and GENERATORS[spec.generator["kind"]].labels
    if spec.labels is None and not generated and all(p.labels is None for p in spec.prompts):
        raise TaskError(_no_labels(spec.name))


def _no_labels(name: str) -> str:
    return (f"task {name}: labels no positions, so --positions labels has no groups; add "
            f"labels: to the task file (IO: Mary, END: -1), or use --positions all")


def group_names(task: Task, mode: str) -> tuple[str, ...]:
    """The position groups of `task` under `mode` (empty for `none`); one `TaskError` line
    when the task cannot be grouped so."""
    check_mode(mode)
    if mode == "none":
        return ()
    if mode == "labels":
        if not task.labels:
            raise TaskError(_no_labels(task.name))
        return (*task.label_names, OTHER)
    lengths = {len(p) for p in task.clean}
    if len(lengths) > 1:
        raise TaskError(f"task {task.name}: prompts of {min(lengths)} to {max(lengths)} tokens; "
                        f"--positions all needs one length (a group per token index), use "
                        f"--positions labels")
    return tuple(str(i) for i in range(lengths.pop()))


def positional_shape(shape: GraphShape, task: Task, mode: str) -> GraphShape:
    """`shape` with the position groups of `task` under `mode` (unchanged for `none`)."""
    groups = group_names(task, mode)
    if mode == "none":
        return shape
    return GraphShape(shape.n_layers, shape.n_heads, shape.has_mlp, shape.granularity,
                      shape.parallel_attn_mlp, mode, groups)  # type: ignore[arg-type]


def group_of(task: Task, groups: Sequence[str], mode: str) -> list[list[int]]:
    """Per prompt, the group index of each of its tokens (`groups` as the graph holds them;
    the prompt's own length: padding is not listed). A task whose labels differ from
    `groups` is a `TaskError` naming both."""
    check_mode(mode)
    if mode == "none":
        raise ValueError("a position-blind graph has no groups")
    expected = group_names(task, mode)
    if tuple(groups) != expected:
        raise TaskError(f"task {task.name}: its position groups are {', '.join(expected)}, the "
                        f"circuit's {', '.join(groups)}: use the task the circuit was found on")
    if mode == "all":
        return [list(range(len(prompt))) for prompt in task.clean]
    assert task.labels is not None  # group_names checked it
    other = len(groups) - 1
    index = {name: i for i, name in enumerate(groups[:-1])}
    out = []
    for prompt, labels in zip(task.clean, task.labels, strict=True):
        row = [other] * len(prompt)
        for name, position in labels.items():
            row[position] = index[name]
        out.append(row)
    return out


def positions_digest(task: Task, groups: Sequence[str], mode: str) -> str:
    """SHA-256 of the groups and of every prompt's assignment of tokens to them."""
    data = [list(groups), group_of(task, groups, mode)]
    return hashlib.sha256(json.dumps(data, separators=(",", ":")).encode()).hexdigest()


def metric_groups(task: Task, groups: Sequence[str], mode: str) -> frozenset[int]:
    """The groups holding some prompt's metric position: where `logits` is read."""
    assignment = group_of(task, groups, mode)
    return frozenset(assignment[b][p] for b, positions in enumerate(task.positions)
                     for p in positions)


def inert_groups(task: Task, groups: Sequence[str], mode: str, ablation: str,
                 causal: bool) -> frozenset[int]:
    """The groups none of whose tokens can change the metric in any circuit (see the module
    docstring): with causal attention, every token of the group, in every prompt, lies after
    its prompt's last metric position or (corrupt ablation) before the first position where
    its prompt's clean and corrupted tokens differ. None with bidirectional attention."""
    if not causal:
        return frozenset()
    assignment = group_of(task, groups, mode)
    live: set[int] = set()
    for b, row in enumerate(assignment):
        first = 0
        if ablation == "corrupt":
            clean, corrupt = task.clean[b], task.corrupt[b]
            first = next((p for p in range(len(clean)) if clean[p] != corrupt[p]), len(clean))
        last = max(task.positions[b])
        live.update(row[p] for p in range(first, last + 1))
    return frozenset(range(len(groups))) - live


def check_assignment(task: Task, groups: Sequence[str], mode: str, recorded: object,
                     source: str) -> None:
    """Refuse, in one `TaskError` line, to apply a positional circuit (`source`, found at
    `groups` under `mode`, its file's `positions_sha256` `recorded`) to a task whose tokens
    fall into other groups: other group names, or the same names at other tokens (the labels
    moved, prompts were added or changed). A circuit that records no digest (a file written by
    hand) is checked by its group names only, with a `RunWarning` saying so."""
    try:
        digest = positions_digest(task, groups, mode)
    except TaskError as error:
        raise TaskError(f"{source}: {error}") from None
    if recorded is None:
        import warnings

        from acdc.errors import RunWarning

        warnings.warn(f"{source}: records no positions_sha256, so only the names of its "
                      f"position groups are checked against task {task.name}, not which "
                      f"tokens fall into them", RunWarning, stacklevel=2)
        return
    if recorded != digest:
        raise TaskError(f"{source}: task {task.name} puts its tokens into the position groups "
                        f"({', '.join(_shown(groups))}) otherwise than the task the circuit "
                        f"was found on (positions_sha256 differs: other labels, prompts or "
                        f"tokenizer); evaluate it on that task (its run.yaml's task_file), or "
                        f"find the circuit again on this one")


def _shown(groups: Sequence[str], most: int = 6) -> list[str]:
    """The first `most` group names, then `...`."""
    return [*groups[:most], *(["..."] if len(groups) > most else [])]
