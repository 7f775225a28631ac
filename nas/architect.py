"""The architecture step: alphas follow the validation loss, first order or unrolled second order (paper eq. 6-8)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Architect:
    """Computes alpha's gradient on a validation batch and steps alpha's own optimiser (Adam, as the paper).

    ``order="first"`` uses dL_val(w, alpha)/dalpha; ``order="second"`` differentiates through one virtual weight
    step w' = w - xi * (momentum * buffer + dL_train/dw + weight_decay * w), with the Hessian-vector product
    approximated by central finite differences at w +- eps * dL_val/dw' (eps = 0.01 / ||dL_val/dw'||).
    The network's weights are never modified here: the virtual step and the perturbations use copies.
    """

    def __init__(self, model: nn.Module, lr: float, weight_decay: float, order: str = "second",
                 w_momentum: float = 0.9, w_weight_decay: float = 3e-4, loss: Loss | None = None,
                 fd_scale: float = 0.01) -> None:
        if order not in ("first", "second"):
            raise ValueError(f"order must be 'first' or 'second' (got {order!r})")
        self.model = model
        self.order = order
        self.w_momentum = w_momentum
        self.w_weight_decay = w_weight_decay
        self.fd_scale = fd_scale
        self.loss = loss or nn.functional.cross_entropy
        self.alphas: list[nn.Parameter] = model.arch_parameters()  # type: ignore[operator]
        self.names = [n for n, _ in model.named_weights()]  # type: ignore[operator]
        self.optimizer = torch.optim.Adam(self.alphas, lr=lr, betas=(0.5, 0.999), weight_decay=weight_decay)

    def _loss(self, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss(functional_call(self.model, params, (x,)), y)

    def _params(self, weights: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        named = dict(zip(self.names, weights))
        for name, p in self.model.named_parameters():
            if name not in named:
                named[name] = p  # the alphas, live
        return named

    def hypergradient(self, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
                      xi: float, w_optimizer: torch.optim.Optimizer | None = None) -> list[torch.Tensor]:
        """d L_val / d alpha for the configured order (alpha's .grad is not touched)."""
        weights = [p.detach() for p in self.model.weights()]  # type: ignore[operator]
        if self.order == "first" or xi == 0:
            loss = self._loss(self._params(weights), x_val, y_val)
            return list(torch.autograd.grad(loss, self.alphas))
        # Virtual step w' = w - xi * (m * buf + g + wd * w), as the weight optimiser would take it.
        live = self.model.weights()  # type: ignore[operator]
        train_loss = self.loss(self.model(x_train), y_train)
        grads = torch.autograd.grad(train_loss, live)
        step = [g + self.w_weight_decay * w for g, w in zip(grads, weights)]
        if w_optimizer is not None and self.w_momentum:
            for s, p in zip(step, live):
                buf = w_optimizer.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    s.add_(buf, alpha=self.w_momentum)
        unrolled = [(w - xi * s).requires_grad_() for w, s in zip(weights, step)]
        val_loss = self._loss(self._params(unrolled), x_val, y_val)
        grads_val = torch.autograd.grad(val_loss, [*self.alphas, *unrolled])
        d_alpha, d_w = grads_val[: len(self.alphas)], list(grads_val[len(self.alphas):])
        hessian = self._hessian_vector_product(weights, d_w, x_train, y_train)
        return [da - xi * h for da, h in zip(d_alpha, hessian)]

    def _hessian_vector_product(self, weights: list[torch.Tensor], vector: list[torch.Tensor],
                                x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """(d/dalpha)(dL_train/dw . v) by central differences: [g(w + eps v) - g(w - eps v)] / (2 eps)."""
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v) for v in vector]))
        eps = self.fd_scale / max(float(norm), 1e-12)
        plus = torch._foreach_add(weights, vector, alpha=eps)
        minus = torch._foreach_add(weights, vector, alpha=-eps)
        g_plus = torch.autograd.grad(self._loss(self._params(plus), x, y), self.alphas)
        g_minus = torch.autograd.grad(self._loss(self._params(minus), x, y), self.alphas)
        return [(gp - gm) / (2 * eps) for gp, gm in zip(g_plus, g_minus)]

    def step(self, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
             xi: float, w_optimizer: torch.optim.Optimizer | None = None) -> None:
        """One alpha update: set alpha's gradient from the validation split, then Adam."""
        grads = self.hypergradient(x_train, y_train, x_val, y_val, xi, w_optimizer)
        for alpha, grad in zip(self.alphas, grads):
            alpha.grad = grad.detach()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
