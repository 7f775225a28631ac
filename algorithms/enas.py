"""ENAS as Katib offers it (``algorithmName: enas``): an LSTM controller samples one architecture per trial and learns
from the finished trials' objective values by REINFORCE (:mod:`katibx.nas.enas_controller`); each trial trains its
child network from scratch, as Katib's does (no weight sharing across trials: a trial is one process).

The controller's state is a function of the seed and the trial history (one training round per block of
``parallelTrialCount`` trials once they have all ended), kept between calls and rebuilt by a new process, so with
``random_state`` a resumed experiment suggests exactly what an uninterrupted one would."""

from __future__ import annotations

import hashlib
import importlib.util
import math
import secrets
from typing import Any, Mapping, Sequence

from katibx.nas.enas_space import ARCHITECTURE, assignments, enas_space, read_assignment
from katibx.search_algorithm import SearchAlgorithm, Suggestion, float_setting, int_setting, setting_path
from katibx.trial import TrialRecord, TrialState

# Katib's settings and defaults (pkg/suggestion/v1beta1/nas/enas/AlgorithmSettings.py), plus a seed.
DEFAULTS: dict[str, str | None] = {
    "controller_hidden_size": "64",
    "controller_temperature": "5.0",
    "controller_tanh_const": "2.25",
    "controller_entropy_weight": "1e-5",
    "controller_baseline_decay": "0.999",
    "controller_learning_rate": "5e-5",
    "controller_skip_target": "0.4",
    "controller_skip_weight": "0.8",
    "controller_train_steps": "50",
    "controller_log_every_steps": "10",
    "random_state": None,  # katibx's: the controller's initial weights and its draws
}
# Settings Katib lets be "None" (the term is then left out), and what each must be otherwise.
_OPTIONAL = {"controller_temperature", "controller_tanh_const", "controller_entropy_weight", "controller_skip_weight"}


class Enas(SearchAlgorithm):
    """Katib's ``enas``: settings and ``spec.nasConfig`` checked up front; architectures from the controller."""

    name = "enas"
    default_settings = DEFAULTS

    def configure(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        self.nas_space, space_errors = enas_space(self.experiment.spec.nas_config)
        errors.extend(space_errors)
        positive = {}
        for name in ("controller_temperature", "controller_tanh_const", "controller_entropy_weight",
                     "controller_skip_weight"):  # "None" leaves the term out; nothing given: Katib's default
            given = {name: settings.get(name) or DEFAULTS[name]}
            positive[name] = None if given[name] == "None" else \
                float_setting(given, name, errors, lambda v: v > 0, "must be > 0 or None")
        unit = {name: float_setting(settings, name, errors, lambda v: 0 < v <= 1, "must be in (0, 1]")
                for name in ("controller_baseline_decay", "controller_learning_rate", "controller_skip_target")}
        counts = {name: int_setting(settings, name, errors, minimum=1)
                  for name in ("controller_hidden_size", "controller_train_steps", "controller_log_every_steps")}
        self.log_every = int(counts["controller_log_every_steps"] or 10)
        self._trainer: Any = None
        self._trained_names: list[str] = []
        self.seed = int_setting(settings, "random_state", errors)
        self._entropy = secrets.randbits(63) if self.seed is None else self.seed
        if importlib.util.find_spec("torch") is None:
            errors.append(f"{setting_path('controller_hidden_size')}: enas's controller needs torch: "
                          "pip install 'katibx[nas]'")
        if errors:
            return
        from katibx.nas.enas_controller import ControllerSettings

        self.controller_settings = ControllerSettings(
            hidden_size=int(counts["controller_hidden_size"] or 64),
            temperature=positive["controller_temperature"], tanh_const=positive["controller_tanh_const"],
            entropy_weight=positive["controller_entropy_weight"],
            baseline_decay=float(unit["controller_baseline_decay"] or 0.999),
            learning_rate=float(unit["controller_learning_rate"] or 5e-5),
            skip_target=float(unit["controller_skip_target"] or 0.4),
            skip_weight=positive["controller_skip_weight"],
            train_steps=int(counts["controller_train_steps"] or 50))

    def suggest(self, trials: Sequence[TrialRecord], count: int) -> list[Suggestion]:
        """Draw ``count`` architectures from the controller trained on the trials so far, the n-th trial's from its
        own seeded generator."""
        import torch

        assert self.nas_space is not None
        controller = self._trained(trials).controller
        suggestions = []
        with torch.no_grad():
            for index in range(len(trials), len(trials) + count):
                seed = hashlib.sha256(f"{self._entropy}:{index}".encode()).digest()[:7]  # the n-th trial's own
                generator = torch.Generator().manual_seed(int.from_bytes(seed, "big"))
                architecture, *_ = controller(generator=generator)
                suggestions.append(Suggestion(assignments(self.nas_space, architecture)))
        return suggestions

    def _trained(self, trials: Sequence[TrialRecord]) -> Any:
        """The controller after one training round (Katib's ``controller_train_steps``) per round of trials: rounds
        are consecutive blocks of ``parallelTrialCount`` trials in creation order, each counted once all of its
        trials have ended, so the weights depend on the history alone (not on when suggestions were asked). Kept
        between calls; rebuilt from the history by a new process (a resume)."""
        import torch

        from katibx.nas.enas_controller import Controller, Trainer

        assert self.nas_space is not None
        size = max(1, self.experiment.spec.parallel_trial_count or 1)
        ordered = sorted(trials, key=lambda t: t.index)
        rounds = 0
        while (rounds + 1) * size <= len(ordered) and \
                all(t.state.is_terminal for t in ordered[rounds * size:(rounds + 1) * size]):
            rounds += 1
        trained = [t.name for t in ordered[:self._trainer.rounds * size]] if self._trainer else []
        if self._trainer is None or self._trainer.rounds > rounds or trained != self._trained_names[:len(trained)]:
            with torch.random.fork_rng(devices=[]):  # layers draw their default weights: not from the caller's stream
                controller = Controller(self.nas_space.num_layers, len(self.nas_space.operations),
                                        self.controller_settings)
            self._trainer = Trainer(controller.initialise(torch.Generator().manual_seed(self._entropy)))
        while self._trainer.rounds < rounds:
            block = ordered[self._trainer.rounds * size:(self._trainer.rounds + 1) * size]
            self._trainer.train_round(self._history(block), self.log_every)
        self._trained_names = [t.name for t in ordered[:rounds * size]]
        return self._trainer

    def _history(self, trials: Sequence[TrialRecord]) -> list[tuple[list[list[int]], float]]:
        """(architecture, reward) of each Succeeded trial in order: the objective value, negated to minimise."""
        history = []
        for trial in trials:
            loss = self.objective.loss(trial) if trial.state is TrialState.SUCCEEDED else None
            if loss is None or not math.isfinite(loss):
                continue
            try:
                architecture = read_assignment(str(trial.assignments[ARCHITECTURE]))
                assert self.nas_space is not None
                self.nas_space.check_architecture(architecture)
            except (KeyError, ValueError, TypeError):
                continue  # not one of this space's architectures (an edited experiment): nothing to learn from
            history.append((architecture, -loss))
        return history
