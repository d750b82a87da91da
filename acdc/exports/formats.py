"""`circuit export`: a circuit as a MIB circuit file, GraphML or CSV.

- `mib`: the MIB benchmark's circuit-track JSON (`acdc.core.mib`: residual edges only, with
  score and `in_graph`). It needs the model's `d_model`, which a circuit does not hold: it is
  taken from `--d-model` when given, else from a MIB file's own `cfg`, else from the
  configuration of the run's model (`run.yaml` beside the circuit, else the circuit's `model`),
  read without loading weights (`acdc.core.shapes.load_shape`: a checkpoint's `config.json`, a
  local Hugging Face directory, or a TransformerLens name when online or cached). When none of
  these can be read the export stops and says to pass `--d-model`.
- `graphml`: the whole graph through networkx (`Graph.to_networkx`), every edge with its `name`,
  `kind` (residual or direct), `kept` and `score` (left out where the edge has none: GraphML
  has no null; an infinite or NaN score is written as `inf`, `-inf` or `nan`, as Python and
  networkx read it back), every node with its `kind`, `layer` and whether it is in the
  circuit, and the circuit's scalar settings as graph attributes.
- `csv`: one row per edge of the graph, in graph order: `name, source, target, kind, kept,
  score` (kept `true`/`false`, score empty where the edge has none, `inf`, `-inf` or `nan`
  where it is not finite), from the same networkx graph.

A circuit at positions (`--positions labels|all`, `acdc.core.graph`) has every edge once per
position group. Its CSV has a `position` column (`name, source, target, position, kind, kept,
score`: one row per edge at a group, `a0.h1->a2.h3<q>@S2` at position `S2`); its GraphML is a
multigraph (`networkx.MultiDiGraph`, the edge's name as its key) whose edges carry `position`,
whose nodes carry `positions` (the groups, space-separated, at which the node touches a kept
edge) and whose graph carries `groups` (every group in order, space-separated: group names
hold no whitespace). MIB's graph has no positions, so such a circuit is no MIB file; its
projection (`blind_projection`: an edge kept when it is kept at any group, its score the sum
over its groups, as `Circuit.blind_kept` and `Circuit.blind_scores` read it) is, in any format,
with `--blind`.

The input is a `circuit.json`, a MIB circuit file, or a run directory holding a
`circuit.json`. By default the output goes beside the circuit: `<stem>.mib.json`,
`<stem>.graphml` or `<stem>.csv` (`<stem>.blind.mib.json` ... for a projection).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from acdc.core.circuit import Circuit, circuit_path, load_circuit
from acdc.core.files import check_output, new_directories, read_yaml, write_text_atomic
from acdc.core.graph import Edge, Graph, build_graph
from acdc.errors import AcdcError, GraphError, short_repr

EXPORT_FORMATS: tuple[str, ...] = ("mib", "graphml", "csv")
SUFFIXES = {"mib": ".mib.json", "graphml": ".graphml", "csv": ".csv"}
CSV_COLUMNS: tuple[str, ...] = ("name", "source", "target", "kind", "kept", "score")
POSITIONAL_CSV_COLUMNS: tuple[str, ...] = ("name", "source", "target", "position", "kind", "kept",
                                           "score")
PROJECTION_KEYS: tuple[str, ...] = ("positions", "positions_sha256")  # not in a projection
RUN_FILE = "run.yaml"


def default_out(circuit_path: Path, format: str, blind: bool = False) -> Path:
    """`<stem><suffix>` beside the circuit (`circuit.json` -> `circuit.mib.json`; a blind
    projection: `circuit.blind.mib.json`)."""
    stem = circuit_path.name.removesuffix(".json").removesuffix(".mib")
    return circuit_path.with_name(stem + (".blind" if blind else "") + SUFFIXES[format])


# --------------------------------------------------------------------------- positions


def blind_projection(circuit: Circuit) -> Circuit:
    """A circuit at positions read as a position-blind one: an edge is kept when it is kept at
    any group (`Circuit.blind_kept`) and scored by the sum of its groups' scores
    (`Circuit.blind_scores`), over the blind graph. Its settings lose `positions` and
    `positions_sha256` and record the mode it was projected from (`projected_from`)."""
    graph = circuit.graph
    if not graph.positional:
        raise AcdcError("the circuit is position-blind already; there is nothing to project")
    settings = {key: value for key, value in circuit.settings.items()
                if key not in PROJECTION_KEYS}
    settings["projected_from"] = f"positions {graph.shape.positions}"
    return Circuit(build_graph(graph.shape.blind()), circuit.blind_kept(),
                   circuit.blind_scores(), settings, circuit.results, circuit.node_scores)


def describe_groups(graph: Graph) -> str:
    """`6 position groups (labels: IO, S1, S1+1, S2, END, other)`, the first six named."""
    shown = ", ".join(graph.groups[:6]) + (" ..." if graph.n_groups > 6 else "")
    return f"{graph.n_groups} position groups ({graph.shape.positions}: {shown})"


def check_format(circuit: Circuit, format: str, blind: bool, source: str,
                 flag: str = "--blind") -> None:
    """Refuse, in one line, a MIB file of a circuit at positions (MIB's graph has none) and a
    projection of a blind circuit; `flag` is how the caller asks for a projection."""
    graph = circuit.graph
    if blind and not graph.positional:
        raise AcdcError(f"{source}: is a position-blind circuit; {flag} projects a circuit at "
                        f"positions, so leave it out")
    if format == "mib" and graph.positional and not blind:
        raise AcdcError(f"{source}: is a circuit at {describe_groups(graph)}, and MIB's graph has "
                        f"no positions, so it is no MIB file: export it as csv or graphml (a "
                        f"row or edge per position group), or pass {flag} for a MIB file of "
                        f"its projection (an edge kept at any group is kept, its score the sum "
                        f"over the groups)")


# --------------------------------------------------------------------------- d_model


def run_model(circuit_path: Path, circuit: Circuit) -> str | None:
    """The model of the run beside the circuit (run.yaml), else the circuit's own. A run.yaml
    that cannot be read is one line (naming it), not a silent fallback."""
    run_yaml = circuit_path.parent / RUN_FILE
    if run_yaml.is_file():
        data = read_yaml(run_yaml, "a run.yaml is the mapping `circuit discover` writes; pass "
                                   "--d-model N instead")
        model = data.get("model") if isinstance(data, dict) else None
        if not isinstance(model, str) or not model:
            raise AcdcError(f"{run_yaml}: names no model (model is {short_repr(model)}); pass "
                            f"--d-model N")
        return model
    model = circuit.settings.get("model")
    return model if isinstance(model, str) and model else None


def find_d_model(circuit_path: Path, circuit: Circuit) -> int:
    """The model's d_model for a MIB file (see the module docstring), or one line saying how
    to give it."""
    cfg = circuit.settings.get("mib_cfg")
    if isinstance(cfg, dict) and isinstance(cfg.get("d_model"), int):
        return int(cfg["d_model"])
    model = run_model(circuit_path, circuit)
    hint = "pass --d-model N (the model's residual width: 768 for GPT-2 small)"
    if model is None:
        raise AcdcError(f"{circuit_path}: names no model and has no {RUN_FILE} beside it, so "
                        f"d_model is unknown; {hint}")
    from acdc.core.shapes import load_shape

    try:
        shape = load_shape(model)
    except AcdcError as error:
        raise AcdcError(f"cannot read d_model from the run's model {model!r} ({error}); "
                        f"{hint}") from None
    graph = circuit.graph
    if shape.graph_shape(graph.granularity) != graph.shape.blind():
        raise AcdcError(f"the run's model {model!r} has {shape.n_layers} layers and "
                        f"{shape.n_heads} heads, the circuit {graph.n_layers} and "
                        f"{graph.n_heads} (or they differ in MLPs or parallel blocks); {hint}")
    return shape.d_model


# --------------------------------------------------------------------------- networkx


def circuit_to_networkx(circuit: Circuit):
    """The circuit's whole graph as a `networkx.DiGraph`: edges with `name`, `kind`, `kept`
    and `score` (absent where the edge has none), nodes with `kind`, `layer` (`head` for
    heads) and `in_circuit`, and the circuit's scalar settings as graph attributes. A circuit
    at positions gives a `networkx.MultiDiGraph` (an edge per group, keyed by its name, with
    its `position`; nodes with the `positions` they are kept at; the graph with `groups`)."""
    graph = circuit.graph
    if graph.positional:
        dag = _positional_networkx(circuit)
    else:
        dag = graph.to_networkx()
    for edge in graph.edges:
        data = dag.edges[_edge_key(edge)]
        data["kept"] = circuit.kept[edge.index]
        score = circuit.scores[edge.index]
        if score is not None:  # infinities and NaN written as such (inf, -inf, nan)
            data["score"] = float(score)
    in_circuit = set(circuit.nodes())
    kinds: dict[str, tuple[str, int, int | None]] = {
        s.name: (s.kind, s.layer, s.head) for s in graph.senders}
    for r in graph.receivers:
        if r.name not in kinds:
            kind = "logits" if r.kind == "logits" else f"{r.qkv} input"
            kinds[r.name] = (kind, r.layer, r.head)
    for name, data in dag.nodes(data=True):
        kind, layer, head = kinds[name]
        data.update(kind=kind, layer=layer, in_circuit=name in in_circuit)
        if head is not None:
            data["head"] = head
    for key, value in circuit.settings.items():
        if isinstance(value, (str, int, float, bool)):
            dag.graph[key] = value
    dag.graph.update(n_edges_total=len(graph.edges), n_edges_kept=circuit.n_edges_kept)
    return dag


def _edge_key(edge: Edge) -> tuple[str, ...]:
    """An edge's key in the networkx graph: its endpoints, and its name at positions."""
    source, target = edge.endpoints
    return (source, target) if edge.group is None else (source, target, edge.name)


def _positional_networkx(circuit: Circuit):
    """The multigraph of a circuit at positions, before the kept flags and scores."""
    import networkx as nx

    graph = circuit.graph
    dag = nx.MultiDiGraph()
    kept_at: dict[str, set[int]] = {}
    for edge in graph.edges:
        if circuit.kept[edge.index]:
            assert edge.group is not None  # a positional edge
            for name in edge.endpoints:
                kept_at.setdefault(name, set()).add(edge.group)
    for node in graph.node_names():
        dag.add_node(node, positions=" ".join(graph.groups[g]
                                              for g in sorted(kept_at.get(node, ()))))
    for edge in graph.edges:
        assert edge.group is not None  # a positional edge
        dag.add_edge(*edge.endpoints, key=edge.name, name=edge.name, kind=edge.kind,
                     position=graph.groups[edge.group])
    dag.graph["groups"] = " ".join(graph.groups)
    return dag


def to_graphml(circuit: Circuit) -> str:
    """GraphML of the circuit's networkx graph (see `circuit_to_networkx`)."""
    import networkx as nx

    return "\n".join(nx.generate_graphml(circuit_to_networkx(circuit))) + "\n"


def to_csv(circuit: Circuit) -> str:
    """One row per edge, in graph order: name, source, target, kind, kept, score (at
    positions: name, source, target, position, kind, kept, score)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    positional = circuit.graph.positional
    writer.writerow(POSITIONAL_CSV_COLUMNS if positional else CSV_COLUMNS)
    dag = circuit_to_networkx(circuit)
    for edge in circuit.graph.edges:  # networkx iterates by node; the file keeps graph order
        source, target = edge.endpoints
        data = dag.edges[_edge_key(edge)]
        score = data.get("score")
        where = (data["position"],) if positional else ()
        writer.writerow((data["name"], source, target, *where, data["kind"],
                         "true" if data["kept"] else "false",
                         "" if score is None else repr(score)))
    return buffer.getvalue()


# --------------------------------------------------------------------------- export


def export_circuit(target: str | Path, format: str, out: str | Path | None = None,
                   d_model: int | None = None, blind: bool = False) -> tuple[Path, Circuit]:
    """Write the circuit `target` names as `format` (with `blind`, the projection of a circuit
    at positions: `blind_projection`); return the file written and the circuit written.

    >>> export_circuit("runs/demo", "mib")  # doctest: +SKIP
    (PosixPath('runs/demo/circuit.mib.json'), Circuit(...))
    """
    from acdc.core.mib import to_mib

    if format not in EXPORT_FORMATS:
        raise AcdcError(f"unknown export format {format!r}: use one of {', '.join(EXPORT_FORMATS)}")
    path = circuit_path(target)
    circuit = load_circuit(path)
    check_format(circuit, format, blind, str(path))
    if blind:
        circuit = blind_projection(circuit)
    out = Path(out) if out is not None else default_out(path, format, blind)
    run_yaml = path.parent / RUN_FILE
    check_output(out, "--out", [path, *([run_yaml] if run_yaml.is_file() else [])])
    text: str
    if format == "mib":
        width = d_model if d_model is not None else find_d_model(path, circuit)
        try:
            text = json.dumps(to_mib(circuit, width)) + "\n"
        except GraphError as error:
            raise AcdcError(f"{path}: {error}") from None
    elif format == "graphml":
        text = to_graphml(circuit)
    else:
        text = to_csv(circuit)
    with new_directories(out.parent):
        return write_text_atomic(out, text), circuit

