"""`circuit compare` at positions: two circuits at the same groups edge by edge and per group,
a positional circuit against a position-blind one by projection, and the canonical circuits
at positions. Every number is checked against a plain computation over sets of edge names
(`name@group`), sharing no code with `acdc.evaluation`."""

from __future__ import annotations

import json
import random

import pytest
from cli_helpers import invoke

import acdc
from acdc.core.circuit import Circuit, write_circuit
from acdc.core.graph import GraphShape, build_graph
from acdc.errors import GraphError, RunWarning
from acdc.evaluation import canonical
from acdc.evaluation.compare import compare_kept, confusion, group_confusions, kept_from_names
from acdc.evaluation.projection import common_view
from acdc.evaluation.roc import RocPoint, pessimistic_auc, ranking_roc
from acdc.evaluation.summary import summarize

GROUPS = ("IO", "END", "other")
SHAPE = GraphShape(2, 2, True, positions="labels", groups=GROUPS)
BLIND = GraphShape(2, 2, True)
ALL = GraphShape(2, 2, True, positions="all", groups=("0", "1", "2", "3"))


# --------------------------------------------------------------------------- plain sets


def blind_name(name: str) -> str:
    return name.rsplit("@", 1)[0]


def group_of(name: str) -> str:
    return name.rsplit("@", 1)[1]


def nodes_of(names) -> set[str]:
    """The nodes touched by edges, a head's q/k/v input counted as the head."""
    out = set()
    for name in names:
        for end in blind_name(name).split("->"):
            out.add(end.split("<")[0])
    return out


def plain_jaccard(a: set, b: set):
    return len(a & b) / len(a | b) if a | b else None


def plain_rates(found: set, truth: set, universe: set):
    tp, fp = len(found & truth), len(found - truth)
    fn, tn = len(truth - found), len(universe - found - truth)
    return (tp / (tp + fn) if tp + fn else None, fp / (fp + tn) if fp + tn else None,
            tp / (tp + fp) if tp + fp else None)


def random_names(graph, rng, p=0.2) -> set[str]:
    return {e.name for e in graph.edges if rng.random() < p}


def make_circuit(names, shape=SHAPE, scores=None, threshold=0.1) -> Circuit:
    graph = build_graph(shape)
    kept = kept_from_names(graph, names)
    settings = {"model": "models/tiny", "task": "tiny", "method": "acdc", "threshold": threshold,
                "metric": "kl", "ablation": "corrupt", "granularity": shape.granularity}
    if shape.positions != "none":
        settings["positions"] = shape.positions
    results = {"n_edges_decided": len(graph.edges), "metric_circuit": 0.01, "metric_full": 0.0,
               "runtime_s": 1.0, "partial": False}
    return Circuit(graph, kept, tuple(scores) if scores else (None,) * len(kept), settings,
                   results)


def write_run(directory, names, **kwargs):
    directory.mkdir(parents=True, exist_ok=True)
    write_circuit(make_circuit(names, **kwargs), directory / "circuit.json")
    return directory


# --------------------------------------------------------------------------- two circuits


@pytest.mark.parametrize("seed", range(4))
def test_two_circuits_at_positions_edge_by_edge_and_per_group(seed):
    rng = random.Random(seed)
    graph = build_graph(SHAPE)
    a, b = random_names(graph, rng), random_names(graph, rng)
    if seed == 0:  # the two agree at one group
        b = {n for n in b if group_of(n) != "END"} | {n for n in a if group_of(n) == "END"}
    result = compare_kept(graph, kept_from_names(graph, a), kept_from_names(graph, b))
    assert set(result.edges.both) == a & b and set(result.edges.only_a) == a - b
    assert set(result.edges.only_b) == b - a
    assert result.edges.jaccard == pytest.approx(plain_jaccard(a, b))
    assert set(result.nodes.both) == nodes_of(a) & nodes_of(b)
    assert list(result.groups) == list(GROUPS)
    agree = []
    for g in GROUPS:
        at_a = {n for n in a if group_of(n) == g}
        at_b = {n for n in b if group_of(n) == g}
        part = result.groups[g]
        assert set(part.both) == at_a & at_b and set(part.only_a) == at_a - at_b
        assert set(part.only_b) == at_b - at_a
        assert part.jaccard == pytest.approx(plain_jaccard(at_a, at_b))
        if at_a == at_b:
            agree.append(g)
    assert list(result.agree) == agree
    if seed == 0:
        assert "END" in agree


@pytest.mark.parametrize("seed", range(3))
def test_against_a_reference_at_positions(seed):
    rng = random.Random(10 + seed)
    graph = build_graph(SHAPE)
    found, truth = random_names(graph, rng), random_names(graph, rng, 0.1)
    universe = {e.name for e in graph.edges}
    counts = confusion(graph, kept_from_names(graph, found), kept_from_names(graph, truth))
    assert (counts.tpr, counts.fpr, counts.precision) == pytest.approx(
        plain_rates(found, truth, universe))
    per_group = group_confusions(graph, kept_from_names(graph, found),
                                 kept_from_names(graph, truth))
    nodes = group_confusions(graph, kept_from_names(graph, found), kept_from_names(graph, truth),
                             "node")
    all_nodes = nodes_of(universe)
    for g in GROUPS:
        at = {n for n in universe if group_of(n) == g}
        rates = plain_rates(found & at, truth & at, at)
        got = per_group[g]
        assert (got.tpr, got.fpr, got.precision) == pytest.approx(rates)
        rates = plain_rates(nodes_of(found & at), nodes_of(truth & at), all_nodes)
        assert (nodes[g].tpr, nodes[g].fpr, nodes[g].precision) == pytest.approx(rates)


def test_views_projection_and_errors():
    assert common_view([("A", SHAPE), ("B", SHAPE)]).projected == ()
    view = common_view([("A", SHAPE), ("reference r", BLIND)])
    assert view.shape == BLIND and view.projected == ("A",)
    assert "compared position-blind" in view.note and "reference r position-blind" in view.note
    view = common_view([("A", SHAPE), ("B", ALL)])
    assert view.projected == ("A", "B") and "B at positions all (0, 1, 2, 3)" in view.note
    with pytest.raises(GraphError, match="only circuits of one graph"):
        common_view([("A", SHAPE), ("B", GraphShape(2, 3, True))])


# --------------------------------------------------------------------------- files and CLI


def rows_of(stdout: str) -> dict[str, list[str]]:
    """The score table's rows by their first one or two cells (`A`, `A @IO`)."""
    rows = {}
    for line in stdout.splitlines():
        cells = line.split()
        if cells and cells[0] in ("A", "B") and "edges," not in line and "ROC" not in line:
            key = " ".join(cells[:2]) if len(cells) > 1 and cells[1].startswith("@") else cells[0]
            rows[key] = cells[len(key.split()):]
    return rows


def number(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def test_cli_two_positional_circuits_and_a_positional_reference(tmp_path):
    rng = random.Random(3)
    graph = build_graph(SHAPE)
    a, b, truth = (random_names(graph, rng, p) for p in (0.2, 0.2, 0.1))
    run_a, run_b = write_run(tmp_path / "a", a), write_run(tmp_path / "b", b)
    ref = write_run(tmp_path / "ref", truth)
    out = tmp_path / "out"
    result = invoke("compare", run_a, run_b, "-r", ref, "--out", out, "--no-render")
    assert result.exit_code == 0, result.output
    assert "compared edge by edge at 3 position groups (IO, END, other)" in result.stdout
    both = len(a & b)
    assert (f"edges: {both} in both, {len(a - b)} only in A, {len(b - a)} only in B; "
            f"Jaccard {plain_jaccard(a, b):.3f}") in result.stdout
    universe = {e.name for e in graph.edges}
    rows = rows_of(result.stdout)
    for key, found in (("A", a), ("B", b)):
        assert rows[key][:3] == [number(x) for x in plain_rates(found, truth, universe)]
        for g in GROUPS:
            at = {n for n in universe if group_of(n) == g}
            assert rows[f"{key} @{g}"][:3] == [number(x) for x in
                                               plain_rates(found & at, truth & at, at)]
    data = json.loads((out / "comparison.json").read_text())
    assert data["positions"] == {"mode": "labels", "groups": list(GROUPS), "projected": [],
                                 "note": None}
    assert data["inputs"]["A"]["positions"] == "labels"
    assert data["inputs"]["A"]["projected"] is False
    at_io = {n for n in universe if group_of(n) == "IO"}
    assert data["groups"]["IO"]["both"] == len(a & b & at_io)
    assert data["scores"]["B"]["groups"]["END"]["edge"]["tp"] == len(
        {n for n in b & truth if group_of(n) == "END"})
    assert len((out / "union.dot").read_text()) > 0


def test_cli_positional_circuit_against_a_blind_reference_is_projected(tmp_path):
    rng = random.Random(5)
    graph, blind = build_graph(SHAPE), build_graph(BLIND)
    found = random_names(graph, rng)
    truth = random_names(blind, rng, 0.15)
    ref = tmp_path / "ref.txt"
    ref.write_text("\n".join(sorted(truth)) + "\n")  # blind names: read against the blind graph
    run = write_run(tmp_path / "a", found)
    result = invoke("compare", run, "-r", ref, "--out", tmp_path / "out", "--no-render")
    assert result.exit_code == 0, result.output
    assert "compared position-blind" in result.stdout and "A projected" not in result.stdout
    assert f"{run} projected, an edge kept when kept at any position group" in result.stdout
    projected = {blind_name(n) for n in found}
    universe = {e.name for e in blind.edges}
    assert rows_of(result.stdout)["A"][:3] == [number(x) for x in
                                               plain_rates(projected, truth, universe)]
    assert not any(key.startswith("A @") for key in rows_of(result.stdout))
    data = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert data["positions"]["projected"] == [str(run)] and data["positions"]["groups"] == []
    assert data["inputs"]["A"]["projected"] is True
    assert data["totals"]["edges"] == len(blind.edges)


def test_cli_different_groups_are_projected_in_one_line(tmp_path):
    rng = random.Random(8)
    a_names = random_names(build_graph(SHAPE), rng)
    b_names = random_names(build_graph(ALL), rng)
    a, b = write_run(tmp_path / "a", a_names), write_run(tmp_path / "b", b_names, shape=ALL)
    result = invoke("compare", a, b, "--out", tmp_path / "out", "--no-render")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stdout.splitlines() if "compared position-blind" in line]
    assert len(notes) == 1 and "at positions labels (IO, END, other)" in notes[0]
    assert "at positions all (0, 1, 2, 3)" in notes[0]
    pa, pb = {blind_name(n) for n in a_names}, {blind_name(n) for n in b_names}
    assert (f"edges: {len(pa & pb)} in both, {len(pa - pb)} only in A, {len(pb - pa)} only in "
            f"B; Jaccard {plain_jaccard(pa, pb):.3f}") in result.stdout
    # another model's graph stays an error
    other = write_run(tmp_path / "c", ["a0.h0->logits@IO"],
                      shape=GraphShape(2, 3, True, positions="labels", groups=GROUPS))
    result = invoke("compare", a, other, "--out", tmp_path / "out2")
    assert result.exit_code == 1 and "only circuits of one graph" in result.stderr


def test_sweep_at_positions_roc_overall_and_per_group(tmp_path):
    rng = random.Random(2)
    graph = build_graph(SHAPE)
    universe = {e.name for e in graph.edges}
    truth = random_names(graph, rng, 0.1)
    truth |= {"a0.h0->logits@END"}
    truth -= {n for n in truth if group_of(n) == "other"}  # no positive at `other`
    ref = write_run(tmp_path / "ref", truth)
    sweep = tmp_path / "sweep"
    runs = {}
    for i, p in enumerate((0.05, 0.2, 0.5, 0.8)):
        names = random_names(graph, rng, p) | set(list(sorted(truth))[:i * 3])
        runs[float(i)] = names
        write_run(sweep / f"tau-{i}", names, threshold=float(i))
    with pytest.warns(RunWarning, match="touches every node"):  # a tiny graph
        summary = summarize([sweep], str(ref))
    scores = summary.scores[0]

    def plain_auc(restrict):
        at = {n for n in universe if restrict(n)}
        points = []
        for names in runs.values():
            tpr, fpr, _ = plain_rates(names & at, truth & at, at)
            points.append(RocPoint(fpr, tpr))
        return pessimistic_auc(points)

    assert scores.edge.auc == pytest.approx(plain_auc(lambda n: True))
    for g in ("IO", "END"):
        expected = plain_auc(lambda n, g=g: group_of(n) == g)
        assert scores.groups[g].edge.auc == pytest.approx(expected)
    assert scores.groups["other"].edge is None  # no positive there: undefined
    out = tmp_path / "out"
    result = invoke("compare", sweep, "-r", ref, "--out", out, "--no-render")
    assert result.exit_code == 0, result.output
    assert "A edge ROC AUC by position group: IO " in result.stdout
    assert "other undefined" in result.stdout
    roc = json.loads((out / "roc.json").read_text())
    assert roc["sweeps"][0]["groups"]["END"]["auc"]["edge"] == pytest.approx(
        plain_auc(lambda n: group_of(n) == "END"))


def plain_ranking_auc(graph, scores, truth: set[str], restrict=lambda name: True) -> float:
    """Every cut of a positional edge ranking recomputed from names: the residual edges with
    |score| at least the cut's (unscored ones last, together), each direct edge at group g
    kept when a kept residual edge feeds its input at g."""
    edges = [e for e in graph.edges if restrict(e.name)]
    residual = [e for e in edges if e.kind == "residual"]
    levels = sorted({abs(scores[e.index]) for e in residual if scores[e.index] is not None},
                    reverse=True)
    cuts = [set()] + [{e.name for e in residual
                       if scores[e.index] is not None and abs(scores[e.index]) >= level}
                      for level in levels]
    cuts.append({e.name for e in residual})
    universe = {e.name for e in edges}
    points = []
    for kept in cuts:
        fed = {(blind_name(n).split("->")[1], group_of(n)) for n in kept}
        kept = kept | {e.name for e in edges if e.kind == "direct"
                       and (blind_name(e.name).split("->")[0], group_of(e.name)) in fed}
        tpr, fpr, _ = plain_rates(kept, truth & universe, universe)
        points.append(RocPoint(fpr, tpr))
    return pessimistic_auc(points)


@pytest.mark.parametrize("seed", range(3))
def test_ranking_roc_at_positions_keys_direct_edges_by_group(seed):
    rng = random.Random(20 + seed)
    graph = build_graph(SHAPE)
    scores = [None if rng.random() < 0.1 else round(rng.uniform(-1, 1), 1)
              for _ in graph.edges]
    truth = random_names(graph, rng, 0.1) | {"a1.h0<q>->a1.h0@IO", "m0->a1.h0<q>@IO"}
    kept = kept_from_names(graph, truth)
    auc = ranking_roc(graph, kept, "edge", edge_scores=scores).auc
    assert auc == pytest.approx(plain_ranking_auc(graph, scores, truth))
    run = make_circuit(random_names(graph, rng), scores=scores)
    result = acdc.compare(run, run)  # the same circuit twice: agrees everywhere
    assert result.pair is not None and list(result.pair.agree) == list(GROUPS)
    summary_scores = _rank_summary(run, truth)
    for g in GROUPS:
        expected = plain_ranking_auc(graph, scores, truth, lambda n, g=g: group_of(n) == g)
        assert summary_scores.groups[g].edge.auc == pytest.approx(expected)


def _rank_summary(run, truth):
    from acdc.evaluation.sources import Reference
    from acdc.evaluation.summary import rank_scores

    reference = Reference("truth", kept_from_names(run.graph, truth), run.graph)
    return rank_scores(run, "edge", reference, ("edge",), "run")


def test_api_compare_at_positions_and_projected(tmp_path):
    rng = random.Random(4)
    graph = build_graph(SHAPE)
    a, b = random_names(graph, rng), random_names(graph, rng)
    ref = write_run(tmp_path / "ref", random_names(graph, rng, 0.1))
    result = acdc.compare(make_circuit(a), make_circuit(b), reference=str(ref))
    assert result.note is None and set(result.group_scores["A"]) == set(GROUPS)
    assert "<td>A @END</td>" in result._repr_html_()
    assert result.pair is not None and result.pair.groups["IO"].jaccard == pytest.approx(
        plain_jaccard({n for n in a if group_of(n) == "IO"}, {n for n in b if group_of(n) == "IO"}))
    blind = make_circuit({blind_name(n) for n in b}, shape=BLIND)
    result = acdc.compare(make_circuit(a), blind)
    assert result.note is not None and "A projected" in result.note
    pa, pb = {blind_name(n) for n in a}, {blind_name(n) for n in b}
    assert result.pair is not None
    assert result.pair.edges.jaccard == pytest.approx(plain_jaccard(pa, pb))


# --------------------------------------------------------------------------- canonical


def plain_ioi_positions(graph) -> set[str]:
    """auto-circuit's token-specific IOI construction, read from its description: for each
    connection, senders (the class, or input) and the MLPs from the sender's first layer up
    to the receiver's last (every later MLP for the logits) into the receiving inputs at their
    tokens and into those MLPs at every receiving token of the connection; then the direct
    edges of fed inputs."""
    cls = canonical.IOI_CLASSES
    movers = ("name mover", "backup name mover", "negative name mover")
    connections = [("input", "previous token", {"q": "S1+1", "k": "S1", "v": "S1"}),
                   ("input", "duplicate token", {"q": "S2", "k": "S1", "v": "S1"}),
                   ("input", "S-inhibition", {"q": "END"}),
                   ("previous token", "induction", {"k": "S1+1", "v": "S1+1"}),
                   ("induction", "S-inhibition", {"k": "S2", "v": "S2"}),
                   ("duplicate token", "S-inhibition", {"k": "S2", "v": "S2"})]
    connections += [("input", m, {"k": "IO", "v": "IO"}) for m in movers]
    connections += [("S-inhibition", m, {"q": "END"}) for m in movers]
    connections += [(m, "logits", {"": "END"}) for m in movers]
    names = set(graph.edge_index)
    kept: set[str] = set()
    for sender, receiver, letters in connections:
        first = 0 if sender == "input" else min(layer for layer, _ in cls[sender])
        last = 12 if receiver == "logits" else max(layer for layer, _ in cls[receiver])
        mlps = [f"m{layer}" for layer in range(first, last)]
        sources = (["input"] if sender == "input"
                   else [f"a{layer}.h{head}" for layer, head in cls[sender]]) + mlps
        targets = ([("logits", "END")] if receiver == "logits"
                   else [(f"a{layer}.h{head}<{x}>", g) for layer, head in cls[receiver]
                         for x, g in letters.items()])
        targets += [(m, g) for m in mlps for g in set(letters.values())]
        kept |= {f"{s}->{t}@{g}" for s in sources for t, g in targets} & names
    fed = {(blind_name(n).split("->")[1], group_of(n)) for n in kept}
    kept |= {f"{i}->{i.split('<')[0]}@{g}" for i, g in fed if "<" in i}
    return kept


def test_canonical_circuits_at_positions():
    graph = canonical.canonical_graph("ioi-gpt2-positions")
    assert graph.groups == ("IO", "S1", "S1+1", "S2", "END", "other")
    kept = canonical.load_canonical("ioi-gpt2-positions", graph)
    names = {e.name for e in graph.edges if kept[e.index]}
    assert names == plain_ioi_positions(graph)
    assert not any(group_of(n) == "other" for n in names)
    blind_ioi = set(canonical.canonical_file("ioi-gpt2").read_text().splitlines())
    projected = {blind_name(n) for n in names}
    assert len(projected) == 845 and projected <= blind_ioi  # the documented relation
    for present in ("input->a2.h2<q>@S1+1", "input->a2.h2<k>@S1", "a2.h2->a5.h5<v>@S1+1",
                    "a7.h3->a9.h9<q>@END", "a9.h9->logits@END", "input->a9.h9<v>@IO",
                    "m3->a7.h3<q>@END", "a9.h9<q>->a9.h9@END", "m9->logits@END"):
        assert present in names, present
    for absent in ("input->a2.h2<q>@S1", "a7.h3->a9.h9<k>@END", "a9.h9->logits@IO",
                   "a9.h9<q>->a9.h9@IO", "m3->logits@END"):
        assert absent not in names, absent
    graph = canonical.canonical_graph("greater-than-gpt2-positions")
    assert graph.groups == ("YY", "END", "other")
    kept = canonical.load_canonical("greater-than-gpt2-positions", graph)
    names = {e.name for e in graph.edges if kept[e.index]}
    lines = canonical.canonical_file("greater-than-gpt2").read_text().splitlines()
    assert {blind_name(n) for n in names} == {n for n in lines if n and not n.startswith("#")}
    middle = {f"a{layer}.h{head}" for layer, head in canonical.GT_MIDDLE_HEADS}
    for name in names:
        receiver = blind_name(name).split("->")[1]
        head, _, letter = receiver.partition("<")
        if head in middle and letter:
            assert group_of(name) == ("END" if letter == "q>" else "YY"), name
        elif receiver in ("logits", "m8", "m9", "m10", "m11"):
            assert group_of(name) == "END", name
    assert "input->m0@other" in names and "a0.h1->a5.h5<k>@YY" in names


def test_cli_gpt2_runs_against_ioi_gpt2_positions(tmp_path):
    graph = canonical.canonical_graph("ioi-gpt2-positions")
    truth = plain_ioi_positions(graph)
    rng = random.Random(1)
    found = {n for n in truth if rng.random() < 0.7} | {"a1.h0->logits@END", "m0->m1@other"}
    gpt2 = GraphShape(12, 12, True, positions="labels", groups=canonical.IOI_GROUPS)
    run = write_run(tmp_path / "run", found, shape=gpt2)
    result = invoke("compare", run, "-r", "ioi-gpt2-positions", "--out", tmp_path / "o1",
                    "--no-render")
    assert result.exit_code == 0, result.output
    universe = set(graph.edge_index)
    rows = rows_of(result.stdout)
    assert rows["A"][:3] == [number(x) for x in plain_rates(found, truth, universe)]
    assert rows["A @other"][0] == "-"  # nothing of the reference at other: TPR undefined
    # a blind run against it: the reference is projected
    blind_found = {blind_name(n) for n in found}
    run = write_run(tmp_path / "blind", blind_found, shape=canonical.GPT2_SMALL)
    result = invoke("compare", run, "-r", "ioi-gpt2-positions", "--out", tmp_path / "o2",
                    "--no-render")
    assert result.exit_code == 0, result.output
    assert "reference ioi-gpt2-positions projected" in result.stdout
    blind_universe = {e.name for e in build_graph(canonical.GPT2_SMALL).edges}
    assert rows_of(result.stdout)["A"][:3] == [
        number(x) for x in plain_rates(blind_found, {blind_name(n) for n in truth},
                                       blind_universe)]


def test_circuits_of_tasks_grouped_differently_are_compared_with_a_warning(tmp_path):
    rng = random.Random(6)
    graph = build_graph(SHAPE)
    paths = []
    for key, digest in (("a", "1" * 64), ("b", "2" * 64)):
        circuit = make_circuit(random_names(graph, rng))
        circuit = Circuit(graph, circuit.kept, circuit.scores,
                          {**circuit.settings, "positions_sha256": digest}, circuit.results)
        (tmp_path / key).mkdir()
        write_circuit(circuit, tmp_path / key / "circuit.json")
        paths.append(tmp_path / key)
    with pytest.warns(RunWarning, match="positions_sha256 differs"):
        summary = summarize(paths)
    assert summary.pair is not None and list(summary.pair.groups) == list(GROUPS)
