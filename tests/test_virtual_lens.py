"""Choosing the virtual lens's options on the development pair: the score, the declared tie-break,
and the committed choice being the lens's defaults. Reads the stored sweeps; loads no model."""

import json
from pathlib import Path

import pytest

from freezelab.method.lens import LENSES, lens_spec, parse_lens
from freezelab.study.knee import DEV_PAIR
from freezelab.study.results import Grid, load_sweeps
from freezelab.study.virtual_lens import AUTHORS, OUT, choose, cut_costs, option_sets

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dev_sweeps():
    sweeps = load_sweeps(ROOT / "book/results").get(DEV_PAIR)
    if not sweeps:
        pytest.skip("the development pair's sweeps are not stored")
    return sorted(sweeps, key=lambda s: s["seed"])


def test_the_option_set_at_the_knee_wins_and_ties_go_to_the_authors(dev_sweeps):
    grid = Grid(dev_sweeps)
    knee = grid.knee(grid.acc.mean(-1).mean(0), grid.full_acc.mean())[0]
    far = 2 if knee > 15 else grid.L - 1
    specs = [lens_spec(LENSES["virtual"], o) for o in option_sets()]
    authors = lens_spec(LENSES["virtual"], AUTHORS)
    cuts = {spec: [far] * len(dev_sweeps) for spec in specs}
    on_knee = [s for s in specs if s != authors][-1]
    cuts[on_knee] = [knee] * len(dev_sweeps)
    result = choose(dev_sweeps, cuts, control=[far] * len(dev_sweeps), n_boot=50)
    assert result["chosen"] == on_knee and result["options"][on_knee]["knee_miss"]["mean"] == 0
    assert result["options"][authors]["knee_miss"]["mean"] == abs(knee - far)
    assert result["options"][on_knee]["knee_miss_minus"]["authors"]["hi"] < 0  # paired: better than the authors'
    assert result["trivial"]["norm-only control"]["knee_miss"]["mean"] == abs(knee - far)
    cuts[authors] = [knee] * len(dev_sweeps)  # an exact tie: the authors' own options are the simplest
    assert choose(dev_sweeps, cuts, control=[knee] * len(dev_sweeps), n_boot=50)["chosen"] == authors


def test_cut_costs_follow_the_stored_prices(dev_sweeps):
    cost = cut_costs(dev_sweeps, dev_sweeps[0]["num_layers"])
    for c in dev_sweeps[0]["cuts"]:
        assert cost[c["cut"]] == pytest.approx(c["cost_ratio"], abs=1e-9)
    assert cost[29] < cost[28] and len(cost) == 30


def test_the_committed_choice_is_the_lens_default():
    stored = json.loads((ROOT / OUT).read_text())
    assert parse_lens("virtual")[1] == stored["chosen_options"]
    assert stored["chosen"] == lens_spec(*parse_lens("virtual"))
    assert set(stored["options"]) == {lens_spec(LENSES["virtual"], o) for o in option_sets()}
    best = min(s["knee_miss"]["mean"] for s in stored["options"].values())
    assert stored["options"][stored["chosen"]]["knee_miss"]["mean"] == best
