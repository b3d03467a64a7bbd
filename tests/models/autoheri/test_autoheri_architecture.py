"""AutoHERI's search space: candidate edges, derivation rules, the seeded random set, JSON."""

import json

import pytest

from models.autoheri.architecture import (Architecture, Edge, candidate_edges, chain_tasks,
                                          derive_edges, random_edges)


def test_the_chain_follows_the_targets_and_needs_click_and_purchase():
    assert chain_tasks(("click", "cart", "purchase")) == ("click", "cart", "purchase")
    assert chain_tasks(("purchase", "click")) == ("click", "purchase")
    with pytest.raises(ValueError, match="click and purchase"):
        chain_tasks(("click", "cart"))


@pytest.mark.parametrize("tasks,layers,count", [(("click", "purchase"), 3, 9),
                                                (("click", "cart", "purchase"), 3, 27),
                                                (("click", "cart", "purchase"), 2, 12)])
def test_every_upstream_layer_reaches_every_downstream_layer(tasks, layers, count):
    edges = candidate_edges(tasks, layers)
    assert len(edges) == len(set(edges)) == count
    order = {t: k for k, t in enumerate(tasks)}
    assert all(order[e.source] < order[e.target] for e in edges)
    assert {(e.source_layer, e.target_layer) for e in edges} == {
        (i, j) for i in range(layers) for j in range(layers)}


def test_threshold_keeps_the_edges_above_it_and_topk_the_most_probable():
    edges = candidate_edges(("click", "purchase"), 2)
    probs = [0.9, 0.2, 0.5, 0.51]
    assert derive_edges(edges, probs, "threshold", 0.5) == [edges[0], edges[3]]
    assert derive_edges(edges, probs, "topk", top_k=3) == [edges[0], edges[2], edges[3]]
    with pytest.raises(ValueError, match="4 candidate edges but 3"):
        derive_edges(edges, probs[:3], "threshold")


def test_random_edges_are_seeded_and_have_the_asked_count():
    edges = candidate_edges(("click", "cart", "purchase"), 3)
    a, b, c = (random_edges(edges, 7, s) for s in (1, 1, 2))
    assert a == b and len(a) == 7 and len(set(a)) == 7 and a != c
    with pytest.raises(ValueError, match=r"\[0, 27\]"):
        random_edges(edges, 28, 0)


def test_the_architecture_json_round_trips(tmp_path):
    edges = candidate_edges(("click", "cart", "purchase"), 2)
    probs = [0.1 * (k % 10) for k in range(len(edges))]
    arch = Architecture("autoheri", ("click", "cart", "purchase"), (16, 8), edges,
                        [edges[3], edges[5]], probs, [2.0 * p for p in probs],
                        {"autoheri_search": "joint"}, {"steps": 12})
    path = str(tmp_path / "autoheri_architecture.json")
    arch.save(path)
    again = Architecture.load(path)
    assert again == arch
    raw = json.load(open(path))
    assert len(raw["candidates"]) == len(edges)
    assert [r["name"] for r in raw["candidates"] if r["kept"]] == raw["kept"] == [
        edges[3].name, edges[5].name]


def test_an_architecture_without_a_search_round_trips_with_null_probabilities(tmp_path):
    edges = candidate_edges(("click", "purchase"), 1)
    arch = Architecture("autoheri_all", ("click", "purchase"), (4,), edges, edges)
    path = str(tmp_path / "a.json")
    arch.save(path)
    assert Architecture.load(path) == arch
    assert json.load(open(path))["candidates"][0]["probability"] is None


def test_a_foreign_json_or_an_unknown_kept_edge_is_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not an AutoHERI architecture"):
        Architecture.load(str(bad))
    arch = Architecture("autoheri_none", ("click", "purchase"), (4,),
                        candidate_edges(("click", "purchase"), 1), []).to_dict()
    arch["kept"] = [Edge("cart", 0, "purchase", 0).name]
    with pytest.raises(ValueError, match="not candidates"):
        Architecture.from_dict(arch)
