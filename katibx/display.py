"""How an experiment's progress is shown to people: by the CLI, and by ``tune(progress=True)``.

The progress display is a controller listener. It keeps only the latest state it was given and draws from it when
it redraws (10 times a second in a terminal or a notebook; a line at most once a second into a pipe or a log), so
every change is shown, however many arrive, at a cost bounded by the redraws.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Column

from katibx.formatting import short_metric
from katibx.objective import Objective
from katibx.status import ExperimentSummary, TrialCounts
from katibx.store import ExperimentRecord
from katibx.trial import TrialRecord

if TYPE_CHECKING:
    from katibx.trial_book import TrialBook


def progress_text(record: ExperimentRecord, counts: TrialCounts, best: TrialRecord | None) -> tuple[str, int]:
    """The progress line's words for an experiment, its trial counts and optimal trial, and how many trials have
    completed."""
    objective = Objective(record.experiment)
    best_text = f"{objective.metric}={short_metric(objective.raw(best))}" if best is not None else "-"
    stopped = counts.killed + counts.early_stopped
    text = (f"{record.name}: {counts.running} running, {counts.succeeded} succeeded, {counts.failures} failed"
            + (f", {stopped} stopped" if stopped else "") + f"; best {best_text}")
    return text, counts.completed


def progress_display(progress: bool | None) -> ProgressDisplay | None:
    """The display ``progress=`` asks for: by default where someone watches (stderr is a terminal, or a notebook),
    not into a pipe or a log; False none, True always."""
    if progress is None:
        console = Console(stderr=True)
        progress = console.is_terminal or console.is_jupyter
    return ProgressDisplay() if progress else None


class _LatestProgress(Progress):
    """A rich Progress whose one task is brought up to date from the latest state on each redraw."""

    def __init__(self, display: ProgressDisplay, *args: Any, **kwargs: Any) -> None:
        self.display = display  # first: rich may draw while it is set up
        super().__init__(*args, **kwargs)

    def get_renderables(self) -> Any:
        self.display.apply()
        yield from super().get_renderables()


class ProgressDisplay:
    """A live line of trial counts and the best value so far, for a controller's ``listener``; ``close()`` draws
    the final state. ``live``: redraw in place (a terminal, a notebook), else print lines; None decides by the
    console."""

    LINE_SECONDS = 1.0  # at most one progress line a second when not drawing in place

    def __init__(self, console: Console | None = None, *, live: bool | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = (self.console.is_terminal or self.console.is_jupyter) if live is None else live
        self._lock = threading.Lock()
        self._latest: tuple[ExperimentRecord, TrialCounts, TrialRecord | None] | None = None
        self._version = 0
        self._drawn_version = 0
        self._progress: _LatestProgress | None = None
        self._task: Any = None
        self._line = ""
        self._line_at = -float("inf")
        self._timer: threading.Timer | None = None

    def __call__(self, record: ExperimentRecord, book: TrialBook) -> None:
        """As a controller's listener: what its trial book counts and its optimal trial (nothing walks the trials)."""
        self.show(record, ExperimentSummary(book.counts(), book.best))

    def show(self, record: ExperimentRecord, summary: ExperimentSummary) -> None:
        """Show this state: the summary's counts and optimal trial (drawn at the next redraw)."""
        with self._lock:
            self._latest = (record, summary.counts, summary.best)
            self._version += 1
        if self.live:
            if self._progress is None:  # started on the first event, so an early error draws no empty bar
                self._start(record)
            return
        wait = self._line_at + self.LINE_SECONDS - time.monotonic()
        if wait <= 0:
            self._print_line()
        elif self._timer is None:  # drawn a second after the last line, unless more comes before
            self._timer = threading.Timer(wait, self._print_line)
            self._timer.daemon = True
            self._timer.start()

    def _start(self, record: ExperimentRecord) -> None:
        text = TextColumn("{task.description}", table_column=Column(ratio=1, overflow="fold"))  # wraps, never "…"
        self._progress = _LatestProgress(self, SpinnerColumn(), text, BarColumn(bar_width=20), MofNCompleteColumn(),
                                         TimeElapsedColumn(), console=self.console, transient=False,
                                         expand=True)
        self._task = self._progress.add_task(record.name, total=record.experiment.spec.max_trial_count)
        self._progress.start()

    def apply(self) -> None:
        """Bring the live task up to the latest state (on a redraw; nothing to do when nothing changed)."""
        with self._lock:
            latest, version = self._latest, self._version
        if latest is None or version == self._drawn_version or self._progress is None:
            return
        self._drawn_version = version
        text, completed = progress_text(*latest)
        self._progress.update(self._task, description=text, completed=completed)

    def _print_line(self) -> None:
        with self._lock:
            latest, self._timer = self._latest, None
        if latest is None:
            return
        line, _ = progress_text(*latest)
        if line != self._line:
            self._line, self._line_at = line, time.monotonic()
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def close(self) -> None:
        """Draw the last state and stop redrawing."""
        if self._progress is not None:
            self.apply()
            self._progress.refresh()
            self._progress.stop()
            self._progress = None
        elif not self.live:
            timer = self._timer
            if timer is not None:
                timer.cancel()
            self._print_line()
