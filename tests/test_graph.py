"""The graph: edge counts from the facts, names, and the order ACDC visits edges in."""

import pytest

from acdc.core.graph import GraphShape, build_graph, count_edges
from acdc.errors import GraphError

GPT2 = GraphShape(n_layers=12, n_heads=12, has_mlp=True)


@pytest.mark.parametrize(
    "shape, n_edges",
    [
        (GPT2, 32_923),
        (GraphShape(2, 8, False), 305),
        (GraphShape(4, 8, False), 1_377),
        (GraphShape(12, 12, True, "head"), 11_611),
    ],
)
def test_edge_counts_match_the_paper(shape, n_edges):
    graph = build_graph(shape)
    assert len(graph.edges) == n_edges
    assert len({e.name for e in graph.edges}) == n_edges


@pytest.mark.parametrize("shape", [GPT2, GraphShape(2, 8, False), GraphShape(3, 2, True, "head"),
                                   GraphShape(1, 1, False), GraphShape(4, 3, True)])
def test_counts_without_building_the_graph_equal_the_built_graph(shape):
    graph = build_graph(shape)
    counts = count_edges(shape)
    by_receiver: dict[str, int] = {}
    for edge in graph.edges:
        if edge.kind == "direct":
            key = "heads (direct q/k/v)"
        elif edge.receiver.kind == "head":
            key = f"head {edge.receiver.qkv} inputs" if edge.receiver.qkv else "heads"
        else:
            key = "MLPs" if edge.receiver.kind == "mlp" else "logits"
        by_receiver[key] = by_receiver.get(key, 0) + 1
    assert counts["by_receiver"] == by_receiver
    assert counts["edges"] == len(graph.edges)
    assert counts["residual"] == sum(e.kind == "residual" for e in graph.edges)
    assert counts["nodes"] == len(graph.node_names())
    assert counts["senders"] == len(graph.senders) and counts["receivers"] == len(graph.receivers)


def test_a_graph_nobody_can_run_is_refused_before_it_is_built():
    shape = GraphShape(100_000, 12, True)
    assert count_edges(shape)["edges"] > 10**11
    with pytest.raises(GraphError, match="edges, more than the"):
        build_graph(shape)


def test_gpt2_split_into_residual_and_direct_edges():
    graph = build_graph(GPT2)
    kinds = [e.kind for e in graph.edges]
    assert kinds.count("residual") == 32_491
    assert kinds.count("direct") == 432


def test_names_follow_the_shared_convention():
    names = {e.name for e in build_graph(GraphShape(3, 4, True)).edges}
    for name in ["a0.h1->a2.h3<q>", "input->m0", "m0->logits", "a2.h3<q>->a2.h3",
                 "a1.h2->m1", "input->a0.h0<v>", "m1->a2.h0<k>"]:
        assert name in names
    assert "a1.h2->a1.h3<q>" not in names  # heads do not read their own layer
    assert "m1->m1" not in names
    head_names = {e.name for e in build_graph(GraphShape(3, 4, True, "head")).edges}
    assert "a0.h1->a2.h3" in head_names and "m0->a1.h0" in head_names
    assert not any("<" in n for n in head_names)


def test_senders_are_numbered_in_forward_order():
    graph = build_graph(GraphShape(3, 4, True))
    assert [s.name for s in graph.senders[:7]] == ["input", "a0.h0", "a0.h1", "a0.h2", "a0.h3",
                                                   "m0", "a1.h0"]
    assert graph.senders_before(2) == 11
    assert graph.senders[graph.sender_of_mlp(1)].name == "m1"
    assert graph.senders[graph.sender_of_head(2, 3)].name == "a2.h3"


def test_acdc_order_is_the_authors_order():
    graph = build_graph(GraphShape(2, 2, True))
    order = [(node, [e.name for e in edges]) for node, edges in graph.acdc_order()]
    assert order[0] == ("logits", ["m1->logits", "a1.h1->logits", "a1.h0->logits", "m0->logits",
                                   "a0.h1->logits", "a0.h0->logits", "input->logits"])
    assert order[1] == ("m1", ["a1.h1->m1", "a1.h0->m1", "m0->m1", "a0.h1->m1", "a0.h0->m1",
                               "input->m1"])
    assert [n for n, _ in order[2:8]] == ["a1.h1", "a1.h0"] * 3
    assert [es[0] for _, es in order[2:8]] == [
        "a1.h1<v>->a1.h1", "a1.h0<v>->a1.h0", "a1.h1<k>->a1.h1", "a1.h0<k>->a1.h0",
        "a1.h1<q>->a1.h1", "a1.h0<q>->a1.h0"]
    assert [n for n, _ in order[8:14]] == ["a1.h1<v>", "a1.h0<v>", "a1.h1<k>", "a1.h0<k>",
                                           "a1.h1<q>", "a1.h0<q>"]
    assert order[8][1] == ["m0->a1.h1<v>", "a0.h1->a1.h1<v>", "a0.h0->a1.h1<v>", "input->a1.h1<v>"]
    assert order[14][0] == "m0"


def test_reverse_head_order_visits_heads_upwards():
    graph = build_graph(GraphShape(2, 2, True))
    order = [(node, [e.name for e in edges])
             for node, edges in graph.acdc_order(reverse_head_order=True)]
    assert order[0][1][:3] == ["m1->logits", "a1.h0->logits", "a1.h1->logits"]
    assert [n for n, _ in order[2:4]] == ["a1.h0", "a1.h1"]


def test_every_edge_is_visited_once():
    for shape in [GPT2, GraphShape(3, 4, False, "head")]:
        graph = build_graph(shape)
        visited = [e.index for _, edges in graph.acdc_order() for e in edges]
        assert sorted(visited) == list(range(len(graph.edges)))


def test_networkx_export_is_a_dag_with_every_edge():
    import networkx as nx

    graph = build_graph(GraphShape(2, 3, True))
    dag = graph.to_networkx()
    assert nx.is_directed_acyclic_graph(dag)
    assert dag.number_of_edges() == len(graph.edges)
    assert dag.edges["a0.h1<q>", "a0.h1"]["kind"] == "direct"
    kept = [e.kind == "direct" for e in graph.edges]
    assert build_graph(GraphShape(2, 3, True)).to_networkx(kept).number_of_edges() == sum(kept)


def test_unknown_edges_and_granularities_are_errors():
    graph = build_graph(GraphShape(2, 2, False))
    with pytest.raises(GraphError, match="unknown edge 'a9.h9->logits'"):
        graph.edge("a9.h9->logits")
    with pytest.raises(GraphError, match="unknown granularity"):
        build_graph(GraphShape(2, 2, False, "neuron"))
