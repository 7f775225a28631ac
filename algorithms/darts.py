"""DARTS as Katib runs it: one trial whose parameters carry the settings, the search space and the layer count."""

from __future__ import annotations

import json
from typing import Mapping, Sequence

from katibx.nas.search_space import num_layers_from_nas_config, primitives_from_nas_config
from katibx.nas.settings import DEFAULTS, parse_settings
from katibx.search_algorithm import SearchAlgorithm, Suggestion
from katibx.trial import TrialRecord

# The assignment names Katib's darts suggestion service emits (trialParameters reference these).
SETTINGS_REFERENCE = "algorithm-settings"
SEARCH_SPACE_REFERENCE = "search-space"
NUM_LAYERS_REFERENCE = "num-layers"


class Darts(SearchAlgorithm):
    """Katib's ``darts``: validates settings and nasConfig up front, then yields the single search trial."""

    name = "darts"
    default_settings = DEFAULTS

    def configure(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        nas_config = self.experiment.spec.nas_config
        if nas_config is None:
            errors.append("spec.nasConfig: darts needs spec.nasConfig (graphConfig.numLayers and operations)")
            return
        _, setting_errors = parse_settings(settings)
        primitives, space_errors = primitives_from_nas_config(nas_config)
        num_layers, layer_errors = num_layers_from_nas_config(nas_config)
        errors.extend(setting_errors + space_errors + layer_errors)
        # Katib passes the settings as JSON with single quotes (shell-safe); the trial accepts both quote styles.
        given = {k: v for k, v in settings.items() if v is not None}
        self._assignments = {
            SETTINGS_REFERENCE: json.dumps(given).replace('"', "'"),
            SEARCH_SPACE_REFERENCE: json.dumps(primitives).replace('"', "'"),
            NUM_LAYERS_REFERENCE: str(num_layers),
        }

    def suggest(self, trials: Sequence[TrialRecord], count: int) -> list[Suggestion]:
        """The one trial that runs the whole search; nothing after it (each DARTS trial is a full search)."""
        if trials or count < 1:
            return []
        return [Suggestion(dict(self._assignments))]
