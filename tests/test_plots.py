"""The plots explain themselves: every mark has a legend entry, every axis a label, and a
plot that shows part of the data says how much (issue 33). Each plot function is called on
small real inputs and the figure is read as it is saved."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from offline_train import benchmark_report
from safefql_core import calibration, evaluation, replay
from safefql_core.envs import boat


@pytest.fixture
def saved(monkeypatch) -> list[dict]:
    """What each saved figure shows: legend entries, axis labels, titles (axes and figure)."""
    figures: list[dict] = []
    original = Figure.savefig

    def capture(fig, *args, **kwargs):
        axes = [ax for ax in fig.axes if ax.get_visible()]
        legends = [ax.get_legend() for ax in axes] + list(fig.legends)
        figures.append({
            "legend": [t.get_text() for lg in legends if lg is not None for t in lg.get_texts()],
            "ylabels": [ax.get_ylabel() for ax in axes],
            "titles": [ax.get_title() for ax in axes] + [fig._suptitle.get_text() if fig._suptitle else ""],
            "axes": len(axes),
        })
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    return figures


def test_trajectory_map_explains_every_mark(saved, tmp_path):
    starts = boat.evaluation_states()[[0, 1, 157]]   # 157 is doomed
    trajectories = np.stack([np.linspace(s, boat.GOAL, 5) for s in starts])
    evaluation.plot_trajectories(str(tmp_path / "map.png"), trajectories, np.array([0, 2, 5]),
                                 np.array([True, True, False]), "t")
    legend = " | ".join(saved[0]["legend"])
    for entry in ("obstacle", "goal region (within 0.6 of the goal)", "goal", "no violation (1)",
                  "entered an obstacle (2)", "start", "doomed start (1)"):
        assert entry in legend, legend


def test_closed_loop_map_has_no_doomed_entry_when_none_is_doomed(saved, tmp_path):
    trajectories = np.stack([np.linspace(s, boat.GOAL, 5) for s in boat.evaluation_states()[:2]])
    evaluation.plot_trajectories(str(tmp_path / "closed_loop.png"), trajectories, np.zeros(2), np.ones(2, bool), "t")
    assert not any("doomed" in entry for entry in saved[0]["legend"])


def test_safety_plot_labels_its_axis_and_says_how_many_episodes(saved, tmp_path):
    ticks = 6
    result = replay.OpenLoop(policy_actions=np.zeros((ticks, 2)), q_safe=np.linspace(-0.5, 0.1, ticks),
                             v_safe=np.zeros(ticks), margin=np.zeros(ticks), modes=["NOMINAL"] * ticks,
                             reasons=[""] * ticks, q_logged=np.zeros(ticks))
    episodes = [(i, result, np.linspace(-1, 0.5, ticks)) for i in range(2)]
    replay.plot_safety(str(tmp_path / "safety.png"), episodes, -0.1, 0.005, total=5)
    figure = saved[0]
    assert all("safety value" in label for label in figure["ylabels"])
    assert "2 of 5 episodes" in figure["titles"][-1]
    replay.plot_safety(str(tmp_path / "all.png"), episodes, -0.1, 0.005, total=2)
    assert "all 2 episodes" in saved[1]["titles"][-1]


def test_calibration_histogram_says_which_side_is_certified(saved, tmp_path):
    calibration.score_histogram(str(tmp_path / "scores.png"), np.linspace(-1, 1, 50), 0.2, "t")
    legend = " | ".join(saved[0]["legend"])
    assert "R ≤ q̂: a certified state here (V̂ < δ*) cannot violate" in legend
    assert "R > q̂: a certified state here may violate" in legend


def test_benchmark_plot_says_which_way_is_better_and_shows_normalised_cost(saved, tmp_path):
    def row(task, method):
        values = {"mean_return": 10.0, "mean_violations": 1.0, "normalized_cost": 0.5}
        return {"task": task, "method": method, **values, **{f"{k}_std": 0.1 for k in values}}

    benchmark_report.plot(tmp_path / "boat.png", [row("boat", "safefql"), row("boat", "bc")], "t")
    gym = "SafetyPointCircle1-v0"
    benchmark_report.plot(tmp_path / "sg.png", [row(gym, "safefql"), row(gym, "bc")], "t")
    boat_plot, gym_plot = saved
    assert boat_plot["axes"] == 2 and gym_plot["axes"] == 3
    assert "higher is better" in boat_plot["ylabels"][0] and "lower is better" in boat_plot["ylabels"][1]
    assert "normalised cost" in gym_plot["ylabels"][2] and "≤ 1 is within budget" in gym_plot["ylabels"][2]
