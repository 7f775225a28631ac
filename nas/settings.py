"""Katib's darts algorithm settings (names, defaults, validation) plus katibx's extras, shared by plugin and trial."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from katibx.search_algorithm import float_setting, int_setting, setting_path

# Katib's settings and defaults (pkg/suggestion/v1beta1/nas/darts/service.py), values as Katib's strings.
KATIB_DEFAULTS: dict[str, str | None] = {
    "num_epochs": "50",
    "w_lr": "0.025",
    "w_lr_min": "0.001",
    "w_momentum": "0.9",
    "w_weight_decay": "3e-4",
    "w_grad_clip": "5.0",
    "alpha_lr": "3e-4",
    "alpha_weight_decay": "1e-3",
    "batch_size": "128",
    "num_workers": "4",
    "init_channels": "16",
    "print_step": "50",
    "num_nodes": "4",
    "stem_multiplier": "3",
}
# katibx's additions: Katib always runs second order and has no collapse remedy.
EXTRA_DEFAULTS: dict[str, str | None] = {
    "order": "second",               # "first": alternating gradient descent; "second": unrolled (eq. 7-8 of the paper)
    "warmup_epochs": "0",            # epochs training weights only, alphas frozen (PC-DARTS uses 15)
    "max_skip_connections": None,    # DARTS+ early stop / P-DARTS cap on skip_connection in the normal cell
    "train_portion": "0.5",          # share of the training set the weights train on; the rest updates alphas
    "random_state": None,            # seed for weights, alphas, data split and batch order
}
DEFAULTS: dict[str, str | None] = {**KATIB_DEFAULTS, **EXTRA_DEFAULTS}
# Datasets the trial can search (here rather than in nas.data so that checking a command line needs no torch).
DATASETS = ("digits", "cifar10")


@dataclass(frozen=True)
class DartsSettings:
    """Typed, validated darts settings; ``batch_size`` None means one batch holding the whole split."""

    num_epochs: int = 50
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    w_grad_clip: float = 5.0
    alpha_lr: float = 3e-4
    alpha_weight_decay: float = 1e-3
    batch_size: int | None = 128
    num_workers: int = 4
    init_channels: int = 16
    print_step: int = 50
    num_nodes: int = 4
    stem_multiplier: int = 3
    order: str = "second"
    warmup_epochs: int = 0
    max_skip_connections: int | None = None
    train_portion: float = 0.5
    random_state: int | None = None

    def to_json(self) -> str:
        """The settings as JSON (for logs and the saved result)."""
        return json.dumps(asdict(self))


def _none(raw: str | None) -> bool:
    return raw is None or raw == "" or str(raw).lower() in ("none", "null")


def parse_settings(raw: Mapping[str, Any]) -> tuple[DartsSettings | None, list[str]]:
    """Validate settings given as Katib's strings (missing ones take defaults); errors name the setting."""
    errors: list[str] = [f"{setting_path(n)}: unknown darts setting (known: {', '.join(DEFAULTS)})" for n in raw if n not in DEFAULTS]
    values = {name: (None if raw.get(name, default) is None else str(raw.get(name, default))) for name, default in DEFAULTS.items()}
    before = len(errors)

    def integer(name: str, minimum: int) -> int | None:
        if _none(values[name]):
            errors.append(f"{setting_path(name)}: must be an integer >= {minimum} (got {values[name]!r})")
            return None
        return int_setting(values, name, errors, minimum=minimum)

    def number(name: str, valid: Any, requirement: str) -> float | None:
        if _none(values[name]):
            errors.append(f"{setting_path(name)}: must be a number (got {values[name]!r})")
            return None
        return float_setting(values, name, errors, valid, requirement)

    out: dict[str, Any] = {
        "num_epochs": integer("num_epochs", 1),
        "w_lr": number("w_lr", lambda v: v > 0, "must be > 0"),
        "w_lr_min": number("w_lr_min", lambda v: v >= 0, "must be >= 0"),
        "w_momentum": number("w_momentum", lambda v: 0 <= v < 1, "must be in [0, 1)"),
        "w_weight_decay": number("w_weight_decay", lambda v: v >= 0, "must be >= 0"),
        "w_grad_clip": number("w_grad_clip", lambda v: v >= 0, "must be >= 0 (0 turns clipping off)"),
        "alpha_lr": number("alpha_lr", lambda v: v >= 0, "must be >= 0"),
        "alpha_weight_decay": number("alpha_weight_decay", lambda v: v >= 0, "must be >= 0"),
        "batch_size": None if _none(values["batch_size"]) else int_setting(values, "batch_size", errors, minimum=1),
        "num_workers": integer("num_workers", 0),
        "init_channels": integer("init_channels", 1),
        "print_step": integer("print_step", 1),
        "num_nodes": integer("num_nodes", 1),
        "stem_multiplier": integer("stem_multiplier", 1),
        "warmup_epochs": integer("warmup_epochs", 0),
        "max_skip_connections": None if _none(values["max_skip_connections"])
        else int_setting(values, "max_skip_connections", errors, minimum=0),
        "train_portion": number("train_portion", lambda v: 0 < v < 1, "must be between 0 and 1 (exclusive)"),
        "random_state": None if _none(values["random_state"]) else int_setting(values, "random_state", errors, minimum=0),
    }
    order = str(values["order"]).lower()
    if order not in ("first", "second"):
        errors.append(f"{setting_path('order')}: must be 'first' or 'second' (got {values['order']!r})")
    out["order"] = order
    if len(errors) == before:
        if out["w_lr_min"] > out["w_lr"]:
            errors.append(f"{setting_path('w_lr_min')}: must be <= w_lr ({out['w_lr']}) (got {out['w_lr_min']})")
        if out["warmup_epochs"] >= out["num_epochs"] and out["alpha_lr"] > 0:
            errors.append(f"{setting_path('warmup_epochs')}: must be < num_epochs ({out['num_epochs']}) or alphas never train "
                          f"(got {out['warmup_epochs']})")
    if errors:
        return None, errors
    return DartsSettings(**out), []
