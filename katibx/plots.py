"""An experiment's plots as PNG files, drawn by Optuna's matplotlib visualisations over its study
(:mod:`katibx.optuna_study`): optimization history, parallel coordinates, parameter importances, intermediate
values, and the Pareto front of a multi-objective experiment. Needs matplotlib (``pip install 'katibx[plot]'``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from katibx.optuna_study import quiet

log = logging.getLogger(__name__)


class PlotsUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _figures(study: optuna.Study, metric: str) -> dict[str, Callable[[], Any] | str]:
    """Each plot by file name, as a function drawing it (matplotlib Axes, or an array of them), or why the trials
    cannot give it yet."""
    from optuna.visualization import matplotlib as plot

    several = len(study.directions) > 1
    first = {"target": (lambda t: t.values[0]), "target_name": metric} if several else {"target_name": metric}
    finished = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    figures: dict[str, Callable[[], Any] | str] = {
        "optimization-history": lambda: plot.plot_optimization_history(study, **first),
        "parallel-coordinate": lambda: plot.plot_parallel_coordinate(study, **first),
        "param-importances": (lambda: plot.plot_param_importances(study, **first)) if finished >= 2 else
        f"needs 2 trials with an objective value, the experiment has {finished}",
    }
    if any(t.intermediate_values for t in study.trials):
        figures["intermediate-values"] = lambda: plot.plot_intermediate_values(study)
    if several:
        figures["pareto-front"] = lambda: plot.plot_pareto_front(study)
    return figures


def write_plots(study: optuna.Study, metric: str, folder: Path) -> tuple[list[Path], list[str]]:
    """Write the experiment's plots into ``folder`` (``<experiment>-<plot>.png``); returns the files written and,
    for each plot the trials cannot give yet (importances need two finished trials...), a line saying why."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as pyplot
    except ImportError:
        raise PlotsUnavailable("katibx plot needs matplotlib: pip install 'katibx[plot]'") from None
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    skipped: list[str] = []
    for name, draw in _figures(study, metric).items():
        if isinstance(draw, str):
            skipped.append(f"{name}: {draw}")
            continue
        try:
            with quiet():
                axes = draw()
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            skipped.append(f"{name}: {exc}")
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
        if not _has_data(figure):
            skipped.append(f"{name}: no finished trial to draw yet")
            pyplot.close(figure)
            continue
        path = folder / f"{study.study_name.replace('/', '-')}-{name}.png"  # (namespace/experiment)
        figure.set_size_inches(9, 6)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        pyplot.close(figure)
        written.append(path)
    return written, skipped


def _has_data(figure: Any) -> bool:
    """Whether any of the figure's axes draws something (Optuna draws empty axes for an empty study)."""
    return any(ax.lines or ax.collections or ax.patches or ax.images for ax in figure.axes)
