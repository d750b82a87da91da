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

`load_canonical(name, graph)` reads a shipped file against the graph of its model;
`circuit compare ... --reference ioi-gpt2` (or `tracr-reverse`) uses it.

>>> graph = build_graph(GPT2_SMALL)
>>> sum(load_canonical("greater-than-gpt2", graph))
262
>>> sum(load_canonical("tracr-reverse", build_graph(TRACR_REVERSE)))
14
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources

from acdc.core.graph import Graph, GraphShape, build_graph, head_name, mlp_name
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
    authors_count: int
    rules: Callable[[Graph], list[Rule]]
    model: str = "GPT-2 small"  # the model whose graph the circuit is of, for people
    shape: GraphShape = GPT2_SMALL


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
CANONICAL_NAMES: tuple[str, ...] = tuple(CANONICAL)


def canonical_spec(name: str) -> Canonical:
    try:
        return CANONICAL[name]
    except KeyError:
        raise GraphError(f"unknown canonical circuit {name!r}{did_you_mean(name, CANONICAL)}: "
                         f"known are {', '.join(CANONICAL_NAMES)}") from None


def build_canonical(name: str) -> tuple[Graph, list[Rule], tuple[bool, ...]]:
    """The graph, the rules and the kept flags (graph order) of a canonical circuit."""
    spec = canonical_spec(name)
    graph = build_graph(spec.shape)
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
              "", "Components:", *(f"  {line}" for line in spec.heads),
              "", "Counting, rule by rule (an edge counts for the first rule naming it;",
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
    header += [f"    {total:5d}         edges in all (the authors' count: {spec.authors_count:,};"
               f" {'equal' if total == spec.authors_count else 'DIFFERENT'})",
               "",
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
        own = describe_shape(build_graph(spec.shape))
        raise GraphError(f"{name} is a circuit of {spec.model}'s {own} graph, not of the "
                         f"{describe_shape(graph)} graph")
    try:
        text = canonical_file(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GraphError(f"{name}: the data file is missing from the installation (regenerate it "
                         f"with `python -m acdc.evaluation.canonical`)") from None
    return parse_edge_list(text, graph, f"canonical circuit {name}")
