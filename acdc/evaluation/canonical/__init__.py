"""The canonical circuits, as edge lists of the project's graph.

Circuits found by hand, or known by construction, are the references the ACDC paper measures
its ROC against (Conmy et al. 2023, section 4; the documentation's "Judging circuits" page,
"Canonical circuits", summarises each):

- GPT-2 small: IOI (Wang et al. 2022) and greater-than (Hanna et al. 2023). The papers give
  heads and their roles, not edges; the ACDC authors turned them into edge sets with a few
  construction rules, and their sets have 1,041 and 262 edges of the 32,923-edge GPT-2 small
  graph (direct q/k/v edges of kept heads counted).
- tracr (the bundled `models/tracr-reverse` and `models/tracr-proportion`, compiled from RASP
  by `scripts/build_tracr.py`): the compiler places every operation of the program in a known
  head or MLP, so the circuit follows from the program. The authors list its edges with token
  and position embeddings as two senders; this project's graph has one `input` node, so an
  edge from both into one receiver is one edge here (reverse: 14 edges of 89; proportion: 8
  of 29).

This module states each construction in the project's naming, one `Rule` at a time, and the
files `<name>.txt` beside it are generated from them (`python -m acdc.evaluation.canonical`
writes them; `--check` verifies the shipped ones). Each file's header shows the counting: the
components, every rule with the edges it adds, and which rules the documentation's short
summary leaves out (they are the authors' construction all the same; without them the GPT-2
counts would be 692 and 224, not 1,041 and 262).

Two circuits are also given at positions, over the position groups of the bundled tasks'
labels (`--positions labels`; `acdc.core.graph`), as edges `<edge>@<group>`:

- `ioi-gpt2-positions`: auto-circuit's token-specific IOI circuit (Miller et al. 2024, its
  `ioi_official.py`, from Wang et al.'s analysis): every connection between two head classes
  at the token where the receiving input reads it (previous-token heads' queries at S1+1, keys
  and values at S1; ... name movers into the logits at END), with the MLPs between the two
  classes' layers at the receiving positions. It is a different construction from the ACDC
  authors' `ioi-gpt2`: read position-blind it is 845 of its 1,041 edges (fewer MLP edges).
- `greater-than-gpt2-positions`: the ACDC authors' greater-than circuit placed where Hanna et
  al. place it (the middle heads attend from END to YY, MLPs 8-11 and the logits at END);
  edges into the components they give no position for are kept at every group.

In both, a direct q/k/v edge of a head is kept at the groups where that input is fed, as
selection keeps it (`acdc.core.selection`).

`load_canonical(name, graph)` reads a shipped file against the graph of its model;
`circuit compare ... --reference ioi-gpt2` (or `tracr-reverse`, `ioi-gpt2-positions`) uses it.

>>> graph = build_graph(GPT2_SMALL)
>>> sum(load_canonical("greater-than-gpt2", graph))
262
>>> sum(load_canonical("tracr-reverse", build_graph(TRACR_REVERSE)))
14
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from acdc.core.generators.greater_than import GT_LABELS
from acdc.core.generators.ioi import IOI_LABELS
from acdc.core.graph import Edge, Graph, GraphShape, build_graph, head_name, mlp_name
from acdc.core.tasks.labels import OTHER
from acdc.errors import GraphError, did_you_mean
from acdc.evaluation.edge_list import describe_shape, format_edge_list, parse_edge_list

GPT2_SMALL = GraphShape(12, 12, True)
TRACR_REVERSE = GraphShape(4, 1, True)  # models/tracr-reverse
TRACR_PROPORTION = GraphShape(2, 1, True)  # models/tracr-proportion
Head = tuple[int, int]

IOI_CLASSES: dict[str, tuple[Head, ...]] = {
    "name mover": ((9, 9), (10, 0), (9, 6)),
    "backup name mover": ((10, 10), (10, 6), (10, 2), (10, 1), (11, 2), (9, 7), (9, 0), (11, 9)),
    "negative name mover": ((10, 7), (11, 10)),
    "S-inhibition": ((7, 3), (7, 9), (8, 6), (8, 10)),
    "induction": ((5, 5), (5, 8), (5, 9), (6, 9)),
    "duplicate token": ((0, 1), (0, 10), (3, 0)),
    "previous token": ((2, 2), (4, 11)),
}
IOI_MOVERS = ("name mover", "backup name mover", "negative name mover")
# Which inputs of a class's heads the embedding (and, in the summary, every MLP) feeds.
IOI_FROM_INPUT: dict[str, str] = {"previous token": "qkv", "duplicate token": "qkv",
                                  "S-inhibition": "q", "name mover": "kv",
                                  "backup name mover": "kv", "negative name mover": "kv"}
# Head-to-head class pairs: (sender class, receiver class, receiver inputs).
IOI_HEAD_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("previous token", "induction", "kv"),
    ("induction", "S-inhibition", "kv"),
    ("duplicate token", "S-inhibition", "kv"),
    ("S-inhibition", "name mover", "q"),
    ("S-inhibition", "backup name mover", "q"),
    ("S-inhibition", "negative name mover", "q"),
)

# Where auto-circuit's token-specific IOI circuit reads each connection: (sender class or
# input, receiver class or logits, the receiving inputs with their position group).
IOI_PLACED: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("input", "previous token", (("q", "S1+1"), ("k", "S1"), ("v", "S1"))),
    ("input", "duplicate token", (("q", "S2"), ("k", "S1"), ("v", "S1"))),
    ("input", "S-inhibition", (("q", "END"),)),
    *(("input", mover, (("k", "IO"), ("v", "IO"))) for mover in IOI_MOVERS),
    ("previous token", "induction", (("k", "S1+1"), ("v", "S1+1"))),
    ("induction", "S-inhibition", (("k", "S2"), ("v", "S2"))),
    ("duplicate token", "S-inhibition", (("k", "S2"), ("v", "S2"))),
    *(("S-inhibition", mover, (("q", "END"),)) for mover in IOI_MOVERS),
    *((mover, "logits", (("", "END"),)) for mover in IOI_MOVERS),
)
IOI_GROUPS: tuple[str, ...] = (*IOI_LABELS, OTHER)  # the bundled ioi task's, --positions labels
GT_GROUPS: tuple[str, ...] = (*GT_LABELS, OTHER)  # the bundled greater-than task's

GT_EARLY_HEADS: tuple[Head, ...] = ((0, 1), (0, 3), (0, 5))
GT_MIDDLE_HEADS: tuple[Head, ...] = ((5, 5), (6, 1), (6, 9), (7, 10), (8, 11), (9, 1))
GT_EARLY_MLPS: tuple[int, ...] = (0, 1, 2, 3)
GT_LATE_MLPS: tuple[int, ...] = (8, 9, 10, 11)


@dataclass(frozen=True)
class Rule:
    """One construction rule: what it adds, in words, whether the documentation's short
    summary of the circuit states it, and the edges it names (some may be named by an earlier
    rule too)."""

    text: str
    in_summary: bool
    edges: tuple[str, ...]


@dataclass(frozen=True)
class Canonical:
    """A canonical circuit: its name, what it is, where it comes from, the authors' edge
    count, and its construction."""

    name: str
    title: str
    source: tuple[str, ...]
    heads: tuple[str, ...]
    authors_count: int | None  # None: the source publishes no count
    rules: Callable[[Graph], list[Rule]]
    model: str = "GPT-2 small"  # the model whose graph the circuit is of, for people
    shape: GraphShape = GPT2_SMALL
    positions: tuple[str, ...] = ()  # at positions: where the groups come from, in words


# --------------------------------------------------------------------------- naming helpers


def _head(head: Head) -> str:
    return head_name(*head)


def _edges(graph: Graph, senders: Iterable[str], receivers: Iterable[str]) -> tuple[str, ...]:
    """Every edge of `graph` from one of `senders` to one of `receivers`, in graph order."""
    senders, receivers = set(senders), set(receivers)
    return tuple(e.name for e in graph.edges
                 if e.sender is not None and e.sender.name in senders
                 and e.receiver.name in receivers)


def _inputs(heads: Iterable[Head], letters: str) -> list[str]:
    """The named q/k/v inputs of heads: `a5.h5<k>` ..."""
    return [f"{_head(h)}<{x}>" for h in heads for x in letters]


def _direct(graph: Graph, heads: Iterable[Head]) -> tuple[str, ...]:
    wanted = {(layer, head) for layer, head in heads}
    return tuple(e.name for e in graph.edges if e.kind == "direct"
                 and (e.receiver.layer, e.receiver.head) in wanted)


MLPS = [mlp_name(layer) for layer in range(GPT2_SMALL.n_layers)]


# --------------------------------------------------------------------------- IOI


def ioi_rules(graph: Graph) -> list[Rule]:
    """The ACDC authors' IOI construction.

    Their construction starts from the full graph, removes every head outside the 26, and of
    the 26 removes only the embedding's edges into them, the edges between two heads and
    their edges into `logits`; then it adds the class pairs back. Everything touching an MLP
    therefore stays, for every one of the 26 heads and every q/k/v input.
    """
    heads = [h for group in IOI_CLASSES.values() for h in group]
    movers = [h for c in IOI_MOVERS for h in IOI_CLASSES[c]]
    in_summary = {name for c, letters in IOI_FROM_INPUT.items()
                  for name in _inputs(IOI_CLASSES[c], letters)}
    rules = [
        Rule("direct q/k/v edges of the 26 heads", True, _direct(graph, heads)),
        Rule("input -> every MLP, MLP -> every later MLP, every MLP -> logits", True,
             _edges(graph, ["input", *MLPS], MLPS) + _edges(graph, MLPS, ["logits"])),
    ]
    for cls, letters in IOI_FROM_INPUT.items():
        rules.append(Rule(f"input (embedding) -> {cls} heads ({','.join(letters)})", True,
                          _edges(graph, ["input"], _inputs(IOI_CLASSES[cls], letters))))
    for cls, letters in IOI_FROM_INPUT.items():
        rules.append(Rule(f"every MLP -> {cls} heads ({','.join(letters)})", True,
                          _edges(graph, MLPS, _inputs(IOI_CLASSES[cls], letters))))
    for sender, receiver, letters in IOI_HEAD_PAIRS:
        rules.append(Rule(f"{sender} heads -> {receiver} heads ({','.join(letters)})", True,
                          _edges(graph, map(_head, IOI_CLASSES[sender]),
                                 _inputs(IOI_CLASSES[receiver], letters))))
    rules += [
        Rule("name mover, backup and negative heads -> logits", True,
             _edges(graph, map(_head, movers), ["logits"])),
        Rule("name mover, backup and negative heads -> every MLP reading them", True,
             _edges(graph, map(_head, movers), MLPS)),
        Rule("every MLP -> the other q/k/v inputs of the 26 heads (MLP -> head edges the "
             "authors never remove)", False,
             tuple(n for n in _edges(graph, MLPS, _inputs(heads, "qkv"))
                   if n.split("->")[1] not in in_summary)),
        Rule("the other 13 heads -> every MLP reading them (head -> MLP edges the authors "
             "never remove)", False,
             _edges(graph, [_head(h) for h in heads if h not in movers], MLPS)),
        Rule("input -> logits (an edge the authors never remove)", False,
             ("input->logits",)),
    ]
    return rules


# --------------------------------------------------------------------------- greater-than


def greater_than_rules(graph: Graph) -> list[Rule]:
    """The ACDC authors' greater-than construction (Hanna et al.'s components)."""
    early = [_head(h) for h in GT_EARLY_HEADS]
    middle_inputs = _inputs(GT_MIDDLE_HEADS, "qkv")
    early_mlps = [mlp_name(layer) for layer in GT_EARLY_MLPS]
    late_mlps = [mlp_name(layer) for layer in GT_LATE_MLPS]
    last_middle = max(layer for layer, _ in GT_MIDDLE_HEADS)
    before_middle = [mlp_name(layer) for layer in range(last_middle)]

    def within(mlps: list[str]) -> tuple[str, ...]:
        return _edges(graph, mlps, mlps)

    return [
        Rule("direct q/k/v edges of the 9 heads", True,
             _direct(graph, GT_EARLY_HEADS + GT_MIDDLE_HEADS)),
        Rule("input -> early heads 0.1, 0.3, 0.5 (q,k,v)", True,
             _edges(graph, ["input"], _inputs(GT_EARLY_HEADS, "qkv"))),
        Rule("input -> early MLPs 0-3", True, _edges(graph, ["input"], early_mlps)),
        Rule("early heads -> middle heads (q,k,v)", True, _edges(graph, early, middle_inputs)),
        Rule("early MLPs -> middle heads (q,k,v)", True,
             _edges(graph, early_mlps, middle_inputs)),
        Rule("middle heads -> late MLPs 8-11 (those reading them)", True,
             _edges(graph, map(_head, GT_MIDDLE_HEADS), late_mlps)),
        Rule("middle heads -> logits", True,
             _edges(graph, map(_head, GT_MIDDLE_HEADS), ["logits"])),
        Rule("MLPs within a group connected (0-3 and 8-11)", True,
             within(early_mlps) + within(late_mlps)),
        Rule("every earlier MLP -> the middle heads' queries", True,
             _edges(graph, MLPS, _inputs(GT_MIDDLE_HEADS, "q"))),
        Rule("late MLPs -> logits", False, _edges(graph, late_mlps, ["logits"])),
        Rule("head 0.1 -> early MLPs 0-3 (the authors connect 0.1, not 0.3 and 0.5, to them)",
             False, _edges(graph, ["a0.h1"], early_mlps)),
        Rule(f"every MLP before layer {last_middle} -> every later one of them (the authors "
             f"connect all MLPs up to the last middle head's layer)", False, within(before_middle)),
    ]


# --------------------------------------------------------------------------- at positions


def _at(graph: Graph, senders: Iterable[str], receivers: Iterable[tuple[str, str]]
        ) -> tuple[str, ...]:
    """Every edge of the positional `graph` from one of `senders` into one of `receivers`,
    given as (receiver, group) pairs, in graph order."""
    index = graph.edge_index
    found = {index[name] for sender in senders for receiver, group in receivers
             if (name := f"{sender}->{receiver}@{group}") in index}
    return tuple(graph.edges[i].name for i in sorted(found))


def _fed_direct(graph: Graph, heads: Iterable[Head], rules: Sequence[Rule]) -> tuple[str, ...]:
    """The direct q/k/v edges of `heads` at every group where the rules feed that input."""
    wanted = {_head(h) for h in heads}
    named = {name for rule in rules for name in rule.edges}
    fed = {(graph.edge(name).receiver.name, graph.edge(name).group) for name in named}
    return tuple(e.name for e in graph.edges if e.kind == "direct"
                 and e.endpoints[1] in wanted and (e.receiver.name, e.group) in fed)


def _class_nodes(cls: str) -> list[str]:
    return ["input"] if cls == "input" else (["logits"] if cls == "logits"
                                             else [_head(h) for h in IOI_CLASSES[cls]])


def _class_layer(cls: str, end: str) -> int:
    """A class's first (`end="min"`) or last layer; input is layer 0, logits after the last."""
    if cls in ("input", "logits"):
        return 0 if cls == "input" else GPT2_SMALL.n_layers
    layers = [layer for layer, _ in IOI_CLASSES[cls]]
    return min(layers) if end == "min" else max(layers)


def ioi_positions_rules(graph: Graph) -> list[Rule]:
    """auto-circuit's token-specific IOI circuit: per connection, the sender class (and the
    MLPs from its first layer to the receiving class's last) into the receiving inputs at
    their groups, and into those MLPs at every receiving group of the connection."""
    rules: list[Rule] = []
    for sender, receiver, placed in IOI_PLACED:
        targets = [(f"{node}<{letter}>" if letter else node, group)
                   for node in _class_nodes(receiver) for letter, group in placed]
        groups = list(dict.fromkeys(group for _, group in placed))
        mlps = [mlp_name(layer) for layer in range(_class_layer(sender, "min"),
                                                   _class_layer(receiver, "max"))]
        edges = _at(graph, [*_class_nodes(sender), *mlps],
                    targets + [(mlp, group) for mlp in mlps for group in groups])
        where = ", ".join(f"{letter or 'logits'} at {group}" for letter, group in placed)
        between = f"m{mlps[0][1:]}-m{mlps[-1][1:]}" if mlps else "none"
        rules.append(Rule(f"{sender} -> {receiver} ({where}); MLPs between: {between}", True,
                          edges))
    heads = [h for group in IOI_CLASSES.values() for h in group]
    return [Rule("direct q/k/v edges of the 26 heads, at the groups where their input is fed",
                 True, _fed_direct(graph, heads, rules)), *rules]


def _gt_groups(edge: Edge) -> tuple[str, ...]:
    """Where an edge of the ACDC authors' greater-than circuit acts: into a middle head's query
    at END and its key or value at YY (the heads attend from END to YY), into MLPs 8-11 and
    the logits at END; elsewhere Hanna et al. give no position: every group."""
    receiver = edge.receiver
    middle = {(layer, head) for layer, head in GT_MIDDLE_HEADS}
    if receiver.kind == "head" and (receiver.layer, receiver.head) in middle:
        return ("END",) if receiver.qkv == "q" else ("YY",)
    if receiver.kind == "logits" or (receiver.kind == "mlp" and receiver.layer in GT_LATE_MLPS):
        return ("END",)
    return GT_GROUPS


def greater_than_positions_rules(graph: Graph) -> list[Rule]:
    """The ACDC authors' greater-than construction, every edge placed by `_gt_groups`."""
    blind = build_graph(graph.shape.blind())
    rules = []
    for rule in greater_than_rules(blind)[1:]:  # the direct edges follow their inputs
        names = [f"{name}@{group}" for name in rule.edges
                 for group in _gt_groups(blind.edge(name))]
        rules.append(Rule(rule.text, rule.in_summary,
                          tuple(sorted(names, key=lambda n: graph.edge(n).index))))
    heads = GT_EARLY_HEADS + GT_MIDDLE_HEADS
    return [Rule("direct q/k/v edges of the 9 heads, at the groups where their input is fed",
                 True, _fed_direct(graph, heads, rules)), *rules]


# --------------------------------------------------------------------------- tracr


def tracr_reverse_rules(graph: Graph) -> list[Rule]:
    """`make_reverse` as tracr compiles it (models/tracr-reverse): one rule per operation."""
    return [
        Rule("length = SelectorWidth(Select(tokens, tokens, TRUE)): a0.h0 attends to every "
             "position and BOS alike (its query and key do not matter) and reads the BOS "
             "indicator in its value; m0 turns the attention weight into the length",
             True, ("input->a0.h0<v>", "a0.h0<v>->a0.h0", "a0.h0->m0", "input->m0")),
        Rule("opp_idx = length - indices: m1 reads the length and the positions "
             "(the authors' embed -> m1 and pos -> m1 are one edge here)",
             True, ("m0->m1", "input->m1")),
        Rule("opp_idx - 1: m2", True, ("m1->m2",)),
        Rule("reverse = Aggregate(Select(indices, opp_idx, EQ), tokens): a3.h0's query reads "
             "opp_idx - 1, its key the positions, its value the tokens; it writes the output",
             True, ("m2->a3.h0<q>", "input->a3.h0<k>", "input->a3.h0<v>", "a3.h0<q>->a3.h0",
                    "a3.h0<k>->a3.h0", "a3.h0<v>->a3.h0", "a3.h0->logits")),
    ]


def tracr_proportion_rules(graph: Graph) -> list[Rule]:
    """`make_frac_prevs(tokens == "x")` as tracr compiles it (models/tracr-proportion)."""
    return [
        Rule('bools = numerical(tokens == "x"): m0 reads the tokens', True, ("input->m0",)),
        Rule("frac_prevs = numerical(Aggregate(Select(indices, indices, LEQ), bools)): "
             "a1.h0's query and key read the positions (the authors' embed and pos edges into "
             "each are one edge here), its value reads m0; it writes the output",
             True, ("input->a1.h0<q>", "input->a1.h0<k>", "m0->a1.h0<v>", "a1.h0<q>->a1.h0",
                    "a1.h0<k>->a1.h0", "a1.h0<v>->a1.h0", "a1.h0->logits")),
    ]


TRACR_SOURCE = ("the program compiled by tracr (Lindner et al. 2023), the ACDC paper's ground",
                "truth (Conmy et al. 2023, section 4; the authors' edge list in their repository,",
                "acdc/tracr_task/utils.py, with token and position embeddings as one `input`",
                "node); summarised in the documentation, \"Judging circuits\".")

CANONICAL: dict[str, Canonical] = {
    "ioi-gpt2": Canonical(
        "ioi-gpt2", "IOI circuit of GPT-2 small",
        ("Wang et al. 2022, 'Interpretability in the Wild' (the heads and their classes);",
         "edges as the ACDC authors construct them (Conmy et al. 2023, ACDC repository,",
         "acdc/ioi/utils.py); summarised in the documentation, \"Judging circuits\"."),
        tuple(f"{cls}: {' '.join(f'{layer}.{head}' for layer, head in heads)}"
              for cls, heads in IOI_CLASSES.items()),
        1041, ioi_rules),
    "greater-than-gpt2": Canonical(
        "greater-than-gpt2", "greater-than circuit of GPT-2 small",
        ("Hanna et al. 2023, 'How does GPT-2 compute greater-than?' (the components);",
         "edges as the ACDC authors construct them (Conmy et al. 2023, ACDC repository,",
         "acdc/greaterthan/utils.py); summarised in the documentation, \"Judging circuits\"."),
        ("early heads: 0.1 0.3 0.5; early MLPs: 0 1 2 3",
         "middle heads: 5.5 6.1 6.9 7.10 8.11 9.1; late MLPs: 8 9 10 11"),
        262, greater_than_rules),
    "tracr-reverse": Canonical(
        "tracr-reverse", "circuit of tracr's reverse program", TRACR_SOURCE,
        ("a0.h0, m0: length; m1, m2: opp_idx; a3.h0: reverse (layers 1-2 attention and m3 "
         "are empty)",),
        14, tracr_reverse_rules, "tracr-reverse", TRACR_REVERSE),
    "tracr-proportion": Canonical(
        "tracr-proportion", "circuit of tracr's proportion-of-x program", TRACR_SOURCE,
        ("m0: tokens == x; a1.h0: the running mean (a0.h0 and m1 are empty)",),
        8, tracr_proportion_rules, "tracr-proportion", TRACR_PROPORTION),
}
CANONICAL["ioi-gpt2-positions"] = Canonical(
    "ioi-gpt2-positions", "IOI circuit of GPT-2 small at token positions",
    ("auto-circuit's token-specific IOI circuit (Miller, Chughtai, Saunders 2024, 'Transformer",
     "Circuit Evaluation Metrics Are Not Robust'; auto-circuit repository,",
     "auto_circuit/metrics/official_circuits/circuits/ioi_official.py), which places the",
     "connections of Wang et al. 2022's head classes at their tokens; the heads are the ACDC",
     "authors' 26. Summarised in the documentation, \"Judging circuits\"."),
    CANONICAL["ioi-gpt2"].heads, None, ioi_positions_rules,
    shape=GraphShape(12, 12, True, positions="labels", groups=IOI_GROUPS),
    positions=(
        "The groups are the bundled ioi task's labels (IO, S1, S1+1 the token after S1, S2, END",
        "the last token) and `other` (every other token), as `--positions labels` makes them.",
        "Each connection is kept at the token where its receiving input reads it; the MLPs",
        "from the sending class's first layer to the receiving class's last are kept between",
        "them at the receiving tokens (auto-circuit ends the MLPs of a connection into the",
        "logits at the END token's index, which with its prompts is past the last layer:",
        "every later MLP, as here). Nothing is kept at `other`. auto-circuit's graph has no",
        "direct q/k/v edges; its edges are this file's residual edges.",
        "This is not the ACDC authors' ioi-gpt2 read at positions: read position-blind it",
        "is 845 of ioi-gpt2's 1,041 edges (fewer MLP edges, no input->logits, and direct",
        "edges only for the inputs the construction feeds)."))
CANONICAL["greater-than-gpt2-positions"] = Canonical(
    "greater-than-gpt2-positions", "greater-than circuit of GPT-2 small at token positions",
    ("Hanna et al. 2023, 'How does GPT-2 compute greater-than?' (the components, and where",
     "the middle heads and the late MLPs act); edges as the ACDC authors construct them",
     "(Conmy et al. 2023, acdc/greaterthan/utils.py); summarised in the documentation,",
     "\"Judging circuits\"."),
    CANONICAL["greater-than-gpt2"].heads, None, greater_than_positions_rules,
    shape=GraphShape(12, 12, True, positions="labels", groups=GT_GROUPS),
    positions=(
        "The groups are the bundled greater-than task's labels (YY, the start year's last",
        "two digits; END, the last token) and `other`, as `--positions labels` makes them.",
        "Hanna et al. place the circuit's output at END: the middle heads attend from END",
        "to YY (edges into their queries at END, into their keys and values at YY), MLPs",
        "8-11 act at END, the logits are read there. They give no finer positions for the",
        "upstream components (heads 0.1, 0.3, 0.5, MLPs 0-3) nor for the MLPs between them",
        "and the middle heads: edges into those are kept at every group, as auto-circuit",
        "keeps its whole greater-than circuit at every position (it gives no positions)."))
CANONICAL_NAMES: tuple[str, ...] = tuple(CANONICAL)


def canonical_spec(name: str) -> Canonical:
    try:
        return CANONICAL[name]
    except KeyError:
        raise GraphError(f"unknown canonical circuit {name!r}{did_you_mean(name, CANONICAL)}: "
                         f"known are {', '.join(CANONICAL_NAMES)}") from None


@lru_cache(maxsize=4)
def canonical_graph(name: str) -> Graph:
    """The graph a canonical circuit is of (its model's, at its position groups)."""
    return build_graph(canonical_spec(name).shape)


def build_canonical(name: str) -> tuple[Graph, list[Rule], tuple[bool, ...]]:
    """The graph, the rules and the kept flags (graph order) of a canonical circuit."""
    spec = canonical_spec(name)
    graph = canonical_graph(name)
    rules = spec.rules(graph)
    kept = [False] * len(graph.edges)
    for rule in rules:
        for edge in rule.edges:
            kept[graph.edge(edge).index] = True
    return graph, rules, tuple(kept)


def canonical_text(name: str) -> str:
    """The edge-list file of a canonical circuit: the header with the counting, then edges."""
    spec = canonical_spec(name)
    graph, rules, kept = build_canonical(name)
    total = sum(kept)
    header = [f"{spec.name}: the {spec.title}, one edge a line in the project's naming.",
              "Generated by `python -m acdc.evaluation.canonical` from the rules in",
              "acdc/evaluation/canonical/__init__.py; do not edit by hand.",
              "", "Source:", *(f"  {line}" for line in spec.source),
              "", f"Graph: {spec.model}, {describe_shape(graph)}: {len(graph.edges):,} edges "
                  f"(direct q/k/v edges counted).",
              "", "Components:", *(f"  {line}" for line in spec.heads)]
    if spec.positions:
        header += ["", "Positions:", *(f"  {line}" for line in spec.positions)]
    header += ["", "Counting, rule by rule (an edge counts for the first rule naming it;",
               "* = stated in the documentation's short summary, \"Judging circuits\"):",
               "      new  named  rule"]
    seen: set[str] = set()
    summary_total = 0
    for rule in rules:
        new = [edge for edge in rule.edges if edge not in seen]
        seen.update(new)
        if rule.in_summary:
            summary_total += len(new)
        header.append(f"  {'*' if rule.in_summary else ' '} {len(new):4d}  {len(rule.edges):5d}  "
                      f"{rule.text}")
    if spec.authors_count is None:
        residual = sum(1 for e in graph.edges if kept[e.index] and e.kind == "residual")
        header += [f"    {total:5d}         edges in all ({residual:,} residual, "
                   f"{total - residual:,} direct q/k/v; the source publishes no count)"]
    else:
        header += [f"    {total:5d}         edges in all (the authors' count: "
                   f"{spec.authors_count:,}; "
                   f"{'equal' if total == spec.authors_count else 'DIFFERENT'})"]
    if not spec.positions or summary_total != total:
        header += ["",
                   "The rules without * are part of the authors' construction but not of the "
                   "short summary;",
                   f"the starred rules alone give {summary_total} edges."]
    names = [e.name for e in graph.edges if kept[e.index]]
    return format_edge_list(names, header)


def canonical_file(name: str):
    """The shipped file of a canonical circuit (a `Traversable` inside the package)."""
    canonical_spec(name)
    return resources.files("acdc.evaluation.canonical").joinpath(f"{name}.txt")


def load_canonical(name: str, graph: Graph) -> tuple[bool, ...]:
    """The kept flags (in `graph`'s order) of a shipped canonical circuit.

    `graph` must be the circuit's own graph (its model's, q/k/v split).
    """
    spec = canonical_spec(name)
    if graph.shape != spec.shape:
        own = describe_shape(spec.shape)
        raise GraphError(f"{name} is a circuit of {spec.model}'s {own} graph, not of the "
                         f"{describe_shape(graph)} graph")
    try:
        text = canonical_file(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GraphError(f"{name}: the data file is missing from the installation (regenerate it "
                         f"with `python -m acdc.evaluation.canonical`)") from None
    return parse_edge_list(text, graph, f"canonical circuit {name}")
