"""ENAS's controller (Pham et al. 2018, macro search, as Katib configures it) in PyTorch: an LSTM that picks one
operation per layer and, through attention over the earlier layers, the skip connections into it; trained with
REINFORCE on the rewards of finished trials, a moving-average baseline, an entropy bonus and a penalty that keeps
the skip probability near its target."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControllerSettings:
    """Katib's ``controller_*`` settings (None where Katib allows "None": that term is left out)."""

    hidden_size: int = 64
    temperature: float | None = 5.0
    tanh_const: float | None = 2.25
    entropy_weight: float | None = 1e-5
    baseline_decay: float = 0.999
    learning_rate: float = 5e-5
    skip_target: float = 0.4
    skip_weight: float | None = 0.8
    train_steps: int = 50


class Controller(nn.Module):
    """Samples architectures (row ``i`` = ``[op id, skip bits to layers 0..i-1]``) and scores given ones."""

    def __init__(self, num_layers: int, num_operations: int, settings: ControllerSettings) -> None:
        super().__init__()
        self.num_layers, self.num_operations, self.settings = num_layers, num_operations, settings
        hidden = settings.hidden_size
        self.cell = nn.LSTMCell(hidden, hidden)
        self.start = nn.Parameter(torch.zeros(1, hidden))
        self.op_embedding = nn.Embedding(num_operations, hidden)
        self.op_logits = nn.Linear(hidden, num_operations)
        self.attend_previous = nn.Linear(hidden, hidden, bias=False)
        self.attend_current = nn.Linear(hidden, hidden, bias=False)
        self.attend_out = nn.Linear(hidden, 1, bias=False)

    def initialise(self, generator: torch.Generator) -> Controller:
        """ENAS's initialisation, U(-0.1, 0.1), drawn from ``generator`` (the global generator is left alone)."""
        with torch.no_grad():
            for parameter in self.parameters():
                nn.init.uniform_(parameter, -0.1, 0.1, generator=generator)
        return self

    def _shape(self, logits: torch.Tensor) -> torch.Tensor:
        """Temperature, then ``tanh_const * tanh``: keeps the controller from committing too early."""
        if self.settings.temperature is not None:
            logits = logits / self.settings.temperature
        if self.settings.tanh_const is not None:
            logits = self.settings.tanh_const * torch.tanh(logits)
        return logits

    def forward(self, architecture: list[list[int]] | None = None,
                generator: torch.Generator | None = None) -> tuple[list[list[int]], torch.Tensor, torch.Tensor,
                                                                  torch.Tensor]:
        """Sample an architecture (or score ``architecture``): (architecture, log-probability, entropy, the skip
        penalty: KL of each skip's probability from the target)."""
        hidden = self.settings.hidden_size
        h, c = torch.zeros(1, hidden), torch.zeros(1, hidden)
        inputs = self.start
        previous: list[torch.Tensor] = []
        log_prob, entropy, penalty = torch.zeros(()), torch.zeros(()), torch.zeros(())
        target = torch.tensor(self.settings.skip_target)
        rows: list[list[int]] = []
        for layer in range(self.num_layers):
            h, c = self.cell(inputs, (h, c))
            op_dist = torch.distributions.Categorical(logits=self._shape(self.op_logits(h)).squeeze(0))
            op = int(torch.multinomial(op_dist.probs, 1, generator=generator)) if architecture is None \
                else architecture[layer][0]
            log_prob = log_prob + op_dist.log_prob(torch.tensor(op))
            entropy = entropy + op_dist.entropy()
            row = [op]
            if previous:
                query = self.attend_current(h)
                keys = torch.cat([self.attend_previous(p) for p in previous])
                skip_logits = self._shape(self.attend_out(torch.tanh(keys + query)).squeeze(1))
                skip_dist = torch.distributions.Bernoulli(logits=skip_logits)
                skips = (torch.rand(len(previous), generator=generator) < skip_dist.probs).long().tolist() \
                    if architecture is None else architecture[layer][1:]
                log_prob = log_prob + skip_dist.log_prob(torch.tensor(skips, dtype=torch.float)).sum()
                entropy = entropy + skip_dist.entropy().sum()
                probs = skip_dist.probs.clamp(1e-6, 1 - 1e-6)
                penalty = penalty + (probs * torch.log(probs / target)
                                     + (1 - probs) * torch.log((1 - probs) / (1 - target))).sum()
                row += [int(s) for s in skips]
            rows.append(row)
            previous.append(h)
            inputs = self.op_embedding(torch.tensor([op]))
        return rows, log_prob, entropy, penalty


def score(controller: Controller, architectures: list[list[list[int]]]) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  torch.Tensor]:
    """Log-probability, entropy and skip penalty of each given architecture, all in one batched pass (what
    :meth:`Controller.forward` computes for one)."""
    settings, batch = controller.settings, len(architectures)
    hidden = settings.hidden_size
    ops = torch.tensor([[row[0] for row in architecture] for architecture in architectures])  # (B, L)
    h, c = torch.zeros(batch, hidden), torch.zeros(batch, hidden)
    inputs = controller.start.expand(batch, hidden)
    previous: list[torch.Tensor] = []
    log_prob, entropy, penalty = torch.zeros(batch), torch.zeros(batch), torch.zeros(batch)
    target = torch.tensor(settings.skip_target)
    for layer in range(controller.num_layers):
        h, c = controller.cell(inputs, (h, c))
        op_dist = torch.distributions.Categorical(logits=controller._shape(controller.op_logits(h)))
        log_prob = log_prob + op_dist.log_prob(ops[:, layer])
        entropy = entropy + op_dist.entropy()
        if previous:
            keys = torch.stack([controller.attend_previous(p) for p in previous], dim=1)  # (B, layer, H)
            query = controller.attend_current(h).unsqueeze(1)
            skip_dist = torch.distributions.Bernoulli(
                logits=controller._shape(controller.attend_out(torch.tanh(keys + query)).squeeze(2)))
            skips = torch.tensor([architecture[layer][1:] for architecture in architectures], dtype=torch.float)
            log_prob = log_prob + skip_dist.log_prob(skips).sum(1)
            entropy = entropy + skip_dist.entropy().sum(1)
            probs = skip_dist.probs.clamp(1e-6, 1 - 1e-6)
            penalty = penalty + (probs * torch.log(probs / target)
                                 + (1 - probs) * torch.log((1 - probs) / (1 - target))).sum(1)
        previous.append(h)
        inputs = controller.op_embedding(ops[:, layer])
    return log_prob, entropy, penalty


class Trainer:
    """The controller and its Adam state as Katib keeps them between suggestion rounds: each round of finished
    trials (a block of architectures and their rewards, in trial order) adds ``train_steps`` REINFORCE steps, the
    baseline a moving average of the rewards over the steps (starting at 0, as ENAS's). The same rounds in the same
    order give the same weights (one thread: the sums are then always added in one order)."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.optimizer = torch.optim.Adam(controller.parameters(), lr=controller.settings.learning_rate)
        self.baseline = 0.0
        self.rounds = 0

    def train_round(self, history: list[tuple[list[list[int]], float]], log_every: int = 0) -> float:
        """``train_steps`` steps on one round's (architecture, reward) pairs; the last loss (0 for an empty round,
        which still counts as a round)."""
        self.rounds += 1
        if not history:
            return 0.0
        settings = self.controller.settings
        architectures = [architecture for architecture, _ in history]
        rewards = torch.tensor([reward for _, reward in history])
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            loss = torch.zeros(())
            for step in range(settings.train_steps):
                log_prob, entropy, penalty = score(self.controller, architectures)
                bonus = rewards + (settings.entropy_weight or 0.0) * entropy.detach()
                terms = -(bonus - self.baseline) * log_prob
                if settings.skip_weight is not None:
                    terms = terms + settings.skip_weight * penalty
                loss = terms.mean()
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                self.baseline = settings.baseline_decay * self.baseline + \
                    (1 - settings.baseline_decay) * float(bonus.mean())
                if log_every and (step + 1) % log_every == 0:
                    log.info("enas controller round %d step %d: loss %.6f, baseline %.6f", self.rounds, step + 1,
                             float(loss.detach()), self.baseline)
        finally:
            torch.set_num_threads(threads)
        return float(loss.detach())


__all__ = ["Controller", "ControllerSettings", "Trainer", "score"]
