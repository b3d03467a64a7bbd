"""The architecture drawing and the edge-probability chart (and its CLI)."""

import os

import pytest

from models.autoheri.architecture import Architecture, candidate_edges
from models.autoheri.plot import main, plot_architecture, plot_probabilities

TASKS = ("click", "cart", "purchase")


def _searched(seed, layers=2):
    edges = candidate_edges(TASKS, layers)
    probs = [((k * 7 + seed) % 10) / 10 for k in range(len(edges))]
    kept = [e for e, p in zip(edges, probs) if p > 0.5]
    return Architecture("autoheri", TASKS, (8,) * layers, edges, kept, probs, probs,
                        {"autoheri_edge_init": 0.5, "autoheri_derive": "threshold",
                         "autoheri_threshold": 0.5})


def test_the_drawings_are_written_for_searched_and_fixed_architectures(tmp_path):
    fixed = Architecture("autoheri_all", TASKS, (8, 8), candidate_edges(TASKS, 2),
                         candidate_edges(TASKS, 2))
    for k, arch in enumerate((_searched(1), fixed)):
        path = str(tmp_path / f"a{k}.png")
        plot_architecture(arch, path)
        assert os.path.getsize(path) > 10_000


def test_the_probability_chart_cli_draws_several_runs_and_refuses_mixed_search_spaces(
        tmp_path, capsys):
    paths = []
    for seed in (0, 1):
        path = str(tmp_path / f"run{seed}" / "autoheri_architecture.json")
        os.makedirs(os.path.dirname(path))
        _searched(seed).save(path)
        paths.append(path)
    out = str(tmp_path / "probs.png")
    assert main(["--architectures", *paths, "--out", out]) == 0
    assert os.path.getsize(out) > 10_000
    with pytest.raises(ValueError, match="other candidate edges"):
        plot_probabilities([_searched(0), _searched(0, layers=3)], ["a", "b"], out)
    fixed = Architecture("autoheri_none", TASKS, (8,), candidate_edges(TASKS, 1), [])
    fixed_path = str(tmp_path / "none.json")
    fixed.save(fixed_path)
    assert main(["--architectures", fixed_path, "--out", out]) == 2
    assert "no architecture with searched probabilities" in capsys.readouterr().err
