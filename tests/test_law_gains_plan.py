"""Known-answer tests of steps 3-5 and 7: scaling law, gains, plan and benefit curve."""

import json
import types
import warnings

import numpy as np
import pytest

from freezelab.errors import FreezelabError
from freezelab.method.gains import Gains, layer_gains
from freezelab.method.law import Law, LowFitWarning, fit_scaling_law
from freezelab.method.plan import RULES, CutPoint, Plan, benefit_curve, default_cost_curve, plan

# book/method.md: SmolLM2-135M, BBC News, label-restricted logit lens (R^2 = 0.34, excess argmax = block 14).
SMOLLM2_TRACE = [11.18, 5.36, 6.71, 5.56, 5.62, 4.52, 5.05, 5.33, 4.46, 5.94, 5.99, 6.69, 7.07, 5.86, 3.68, 4.11,
                 3.55, 3.73, 3.00, 2.90, 3.63, 4.66, 4.10, 4.41, 4.52, 3.60, 3.46, 3.66, 3.38, 2.45, 0.79]


def power_trace(L=16, E=1.0, A=5.0, alpha=0.7, noise=0.02, offset=0.0, seed=0):
    """d_l = E + A (l + offset)^-alpha + noise for l = 1..L; d_0 = 12 (embedding) unless offset > 0."""
    l = np.arange(L + 1, dtype=float)
    with np.errstate(divide="ignore"):
        d = E + A * (l + offset) ** -alpha
    if offset == 0:
        d[0] = 12.0
    return d + np.random.default_rng(seed).normal(0, noise, L + 1)


def gains_of(excess, observed=None):
    excess = np.asarray(excess, float)
    observed = excess if observed is None else np.asarray(observed, float)
    return Gains(observed=observed, expected=observed - excess, excess=excess)


# ---- law -------------------------------------------------------------------------------------------

def test_fit_recovers_noisy_power_law_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowFitWarning)
        law = fit_scaling_law(power_trace())
    assert abs(law.alpha - 0.7) < 0.15
    assert abs(law.E - 1.0) < 0.3
    assert law.r2 > 0.9
    assert (law.offset, law.first_layer) == (0.0, 1)


def test_fit_with_embedding_uses_offset_and_keeps_dhat0_finite():
    law = fit_scaling_law(power_trace(offset=1.0), include_embedding=True)
    assert (law.offset, law.first_layer) == (1.0, 0)
    assert abs(law.alpha - 0.7) < 0.15 and law.r2 > 0.9
    assert np.isfinite(law(0))


def test_fit_accepts_deviation_object():
    d = power_trace()
    dev = types.SimpleNamespace(lens="logit", mean=d, per_example=np.tile(d, (5, 1)))
    assert fit_scaling_law(dev) == fit_scaling_law(d)


def test_flat_trace_gives_constant_law_and_zero_gains():
    d = np.full(9, 3.0)
    law = fit_scaling_law(d)
    assert (law.E, law.A, law.alpha, law.r2) == (3.0, 0.0, 0.0, 1.0)
    gains = layer_gains(d, law)
    assert np.all(gains.observed == 0) and np.all(gains.expected == 0) and np.all(gains.excess == 0)
    chosen = plan(gains)
    assert chosen.cut == 7  # every tie goes deeper: block L-1
    assert all(c.benefit == 0 and c.benefit_ratio == 1 for c in chosen.curve)


@pytest.mark.parametrize("bad", [[1.0, np.nan, 2.0, 1.0, 0.5], [1.0, 2.0, np.inf, 1.0, 0.5]])
def test_non_finite_trace_errors(bad):
    with pytest.raises(FreezelabError, match="NaN/inf"):
        fit_scaling_law(bad)


@pytest.mark.parametrize("L", [1, 2])
def test_fewer_than_three_blocks_errors(L):
    with pytest.raises(FreezelabError, match="at least 3 blocks"):
        fit_scaling_law(np.linspace(3, 1, L + 1))


def test_two_dimensional_trace_errors():
    with pytest.raises(FreezelabError, match="1-D"):
        fit_scaling_law(np.ones((4, 5)))


def test_unknown_loss_errors():
    with pytest.raises(FreezelabError, match="soft_l1"):
        fit_scaling_law(power_trace(), loss="l3")


def test_noisy_trace_warns_and_reference_trace_matches_method():
    with pytest.warns(LowFitWarning, match="mostly noise"):
        law = fit_scaling_law(SMOLLM2_TRACE)
    assert 0.25 < law.r2 < 0.45
    assert plan(layer_gains(SMOLLM2_TRACE, law)).cut == 14


def test_law_dict_round_trip():
    law = fit_scaling_law(power_trace())
    assert Law.from_dict(json.loads(json.dumps(law.to_dict()))) == law
    with pytest.raises(FreezelabError, match="alpha"):
        Law.from_dict({"E": 1.0, "A": 1.0})


# ---- gains -----------------------------------------------------------------------------------------

def test_gains_identities():
    d = power_trace()
    law = fit_scaling_law(d)
    gains = layer_gains(d, law)
    assert gains.observed.shape == gains.expected.shape == gains.excess.shape == (16,)
    np.testing.assert_allclose(gains.observed, gains.expected + gains.excess)
    assert np.isclose(gains.observed.sum(), d[0] - d[-1])
    assert np.isclose(gains.expected[0], d[0] - law(1))  # dhat(0) replaced by the observed d_0
    np.testing.assert_allclose(gains.expected[1:], law(np.arange(1, 16)) - law(np.arange(2, 17)))
    assert set(gains.to_dict()) == {"observed", "expected", "excess"}


def test_gains_with_embedding_use_the_law_at_zero():
    d = power_trace(offset=1.0)
    law = fit_scaling_law(d, include_embedding=True)
    assert np.isclose(layer_gains(d, law).expected[0], law(0) - law(1))


# ---- plan ------------------------------------------------------------------------------------------

def test_planted_jump_is_chosen_by_excess_not_raw():
    d = power_trace(noise=0.0)
    d[9:] -= 1.0  # block 9 removes one extra nat
    gains = layer_gains(d, fit_scaling_law(d))
    chosen = plan(gains)
    assert chosen.cut == 9
    assert chosen.frozen == list(range(9)) and chosen.trained == list(range(9, 16))
    assert plan(gains, rule="argmax-raw").cut == 2  # raw gains decay with depth


def test_argmax_ties_go_deeper_and_skip_first_and_last_block():
    gains = gains_of([9.0, 1.0, 0.0, 1.0, 9.0])
    assert plan(gains).cut == 4
    assert plan(gains_of([0, 0, 0, 0, 0], observed=[9, 1, 0, 1, 9]), rule="argmax-raw").cut == 4


def test_argmax_needs_three_blocks_but_budget_does_not():
    gains = gains_of([-1.0, 0.5])
    with pytest.raises(FreezelabError, match="L >= 3"):
        plan(gains)
    assert plan(gains, rule="budget", budget=1.0).cut == 0


def test_benefit_curve_known_answer():
    curve = benefit_curve(gains_of([-1.0, 2.0, -0.5, 0.0, -2.0]))
    assert [c.cut for c in curve] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose([c.benefit for c in curve], [3.5, 2.5, 2.5, 2.0, 2.0])
    np.testing.assert_allclose([c.benefit_ratio for c in curve], np.array([3.5, 2.5, 2.5, 2.0, 2.0]) / 3.5)


def test_default_cost_curve():
    ratio, cached = default_cost_curve(4)
    np.testing.assert_allclose(ratio, [1, 10 / 12, 8 / 12, 6 / 12])
    np.testing.assert_allclose(cached, [1, 0.75, 0.5, 0.25])


@pytest.mark.parametrize("budget, cached, expected", [(0.7, False, 4), (0.75, False, 2), (1.0, False, 0),
                                                       (0.5, True, 4), (0.8, True, 2)])
def test_budget_rule_picks_best_benefit_within_budget(budget, cached, expected):
    # default costs for L = 5: ratio [1, .867, .733, .6, .467], cached [1, .8, .6, .4, .2];
    # benefits [3.5, 2.5, 2.5, 2, 2]
    chosen = plan(gains_of([-1.0, 2.0, -0.5, 0.0, -2.0]), rule="budget", budget=budget, cached=cached)
    assert chosen.cut == expected
    assert (chosen.cost_ratio_cached if cached else chosen.cost_ratio) <= budget
    assert chosen.budget == budget and chosen.rule == "budget"


@pytest.mark.parametrize("budget", [None, 0.0, -0.1, 1.5])
def test_budget_out_of_range_errors(budget):
    with pytest.raises(FreezelabError, match=r"\(0, 1\]"):
        plan(gains_of([0.0, 1.0, 0.0]), rule="budget", budget=budget)


def test_budget_with_other_rule_errors():
    with pytest.raises(FreezelabError, match="rule='budget'"):
        plan(gains_of([0.0, 1.0, 0.0]), budget=0.5)


def test_budget_below_cheapest_cut_errors():
    cost_curve = (np.array([1.0, 0.8, 0.5]), np.array([1.0, 0.6, 0.3]))
    with pytest.raises(FreezelabError, match="0.500"):
        plan(gains_of([0.0, 1.0, 0.0]), rule="budget", budget=0.1, cost_curve=cost_curve)


def test_cost_curve_is_used_and_shape_checked():
    cost_curve = (np.array([1.0, 0.8, 0.5]), np.array([1.0, 0.6, 0.3]))
    chosen = plan(gains_of([0.0, 1.0, 0.0]), cost_curve=cost_curve)
    assert (chosen.cut, chosen.cost_ratio, chosen.cost_ratio_cached) == (2, 0.5, 0.3)
    with pytest.raises(FreezelabError, match="shape"):
        plan(gains_of([0.0, 1.0, 0.0]), cost_curve=(np.ones(4), np.ones(4)))


def test_unknown_rule_lists_rules():
    with pytest.raises(FreezelabError, match="argmax-excess"):
        plan(gains_of([0.0, 1.0, 0.0]), rule="argmin")
    assert RULES == ("argmax-excess", "argmax-raw", "budget", "knee", "knee-gain")


@pytest.mark.parametrize("rule, setting", [("argmax-excess", {}), ("argmax-raw", {}), ("budget", {"budget": 0.6}),
                                           ("knee", {"share": 0.7}), ("knee-gain", {"share": 0.7})])
def test_frozen_and_trained_partition_blocks(rule, setting):
    d = power_trace()
    chosen = plan(layer_gains(d, fit_scaling_law(d)), rule=rule, **setting)
    assert sorted(chosen.frozen + chosen.trained) == list(range(16))
    assert chosen.frozen == list(range(chosen.cut))
    assert len(chosen.curve) == 16 and chosen.curve[chosen.cut].benefit == chosen.predicted_benefit


def test_from_cut():
    full = Plan.from_cut(8, 0, rule="full")
    assert (full.frozen, full.trained, full.cost_ratio, full.predicted_benefit) == ([], list(range(8)), 1.0, None)
    top = Plan.from_cut(8, 6, rule="top-25%")
    assert top.trained == [6, 7] and np.isclose(top.cost_ratio_cached, 0.25)
    curve = plan(gains_of([-1.0, 2.0, -0.5, 0.0, -2.0])).curve
    assert Plan.from_cut(5, 2, curve=curve).predicted_benefit == 2.5
    for k in (-1, 8):
        with pytest.raises(FreezelabError, match="out of range"):
            Plan.from_cut(8, k)


def test_plan_round_trips_through_dict_and_json(tmp_path):
    d = power_trace()
    law = fit_scaling_law(d)
    gains = layer_gains(d, law)
    chosen = plan(gains)
    chosen.extras.update(model="tiny", law=law.to_dict(), gains=gains.to_dict())
    assert isinstance(chosen.curve[0], CutPoint)
    assert Plan.from_dict(chosen.to_dict()) == chosen

    chosen.extras["deviation"] = d  # numpy values are written as lists

    path = tmp_path / "plans" / "plan.json"
    chosen.save(path)
    loaded = Plan.load(path)
    assert loaded.extras["deviation"] == d.tolist()
    loaded.extras["deviation"] = chosen.extras["deviation"] = d.tolist()
    assert loaded == chosen
    assert [p.name for p in path.parent.iterdir()] == ["plan.json"]


def test_failed_save_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "plan.json"
    Plan.from_cut(4, 2).save(path)
    before = path.read_text()
    broken = Plan.from_cut(4, 1)
    broken.extras["bad"] = object()
    with pytest.raises(TypeError):
        broken.save(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_load_errors_are_explained(tmp_path):
    with pytest.raises(FreezelabError, match="no plan"):
        Plan.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FreezelabError, match="not a plan"):
        Plan.load(tmp_path / "bad.json")
    record = Plan.from_cut(4, 2).to_dict()
    record["trained"] = [3]
    with pytest.raises(FreezelabError, match="partition"):
        Plan.from_dict(record)
    del record["rule"]
    with pytest.raises(FreezelabError, match="rule"):
        Plan.from_dict(record)


def test_law_reports_parameters_on_their_bound():
    from freezelab.method.law import BoundWarning

    depth = np.arange(31.0)
    clean = 1.0 + 4.0 * np.maximum(depth, 1) ** -0.8
    with warnings.catch_warnings():
        warnings.simplefilter("error", BoundWarning)  # an interior fit warns nothing
        law = fit_scaling_law(clean)
    assert law.at_bound == () and law.E == pytest.approx(1.0, abs=1e-3)
    to_zero = 4.0 * np.maximum(depth, 1) ** -0.8  # true E = 0: the fit sits on the bound
    with pytest.warns(BoundWarning, match="E = 0"):
        assert fit_scaling_law(to_zero).at_bound == ("E",)
    assert Law.from_dict(json.loads(json.dumps(law.to_dict()))) == law


def test_each_rule_takes_its_own_setting():
    g = layer_gains(power_trace(), fit_scaling_law(power_trace()))
    with pytest.raises(FreezelabError, match=r"share= \(--share\), not a cost budget"):
        plan(g, rule="knee", budget=0.9)  # a cost cap is not a share of the benefit
    with pytest.raises(FreezelabError, match="needs the share"):
        plan(g, rule="knee-gain")
    with pytest.raises(FreezelabError, match="a share only applies to the knee rules"):
        plan(g, rule="budget", budget=0.5, share=0.5)
    assert plan(g, rule="knee", share=0.9).share == 0.9 and plan(g, rule="knee", share=0.9).budget is None


def test_knee_rules_keep_a_share_of_the_benefit():
    from freezelab.method.plan import knee_cut

    values = np.array([0.0, 0.0, 1.0, 0.0, 3.0])  # blocks 1..5
    assert knee_cut(values, 0.5) == 4  # block 5 alone holds 3/4
    assert knee_cut(values, 0.9) == 2  # blocks 3..5 hold it all
    assert knee_cut(np.zeros(4), 0.5) == 0  # nothing predicted: train every block
    excess = np.array([0.0, 0.5, -0.2, -0.1, 0.3, -0.6])
    g = Gains(observed=excess, expected=np.zeros(6), excess=excess)
    assert plan(g, rule="knee-gain", share=0.9).cut == 1  # blocks 2..6 keep 0.8 >= 0.72
    assert plan(g, rule="knee-gain", share=0.3).cut == 4  # block 5's 0.3 >= 0.24
    assert plan(g, rule="knee", share=0.6).cut == 5  # block 6's shortfall 0.6 of 0.9
    with pytest.raises(FreezelabError, match="share"):
        plan(g, rule="knee")
