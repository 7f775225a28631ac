"""A small trial script: logistic regression by SGD with momentum on a fixed synthetic data set (numpy only).

Prints Katib's default metrics format (``name=value``) once per epoch, so katibx (or Katib) collects
the metrics from standard output with no code changes.
"""

import argparse

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--momentum", type=float, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    data = np.random.default_rng(0)
    x = data.normal(size=(2000, 10))
    w_true = data.normal(size=10)
    y = (x @ w_true + 0.5 * data.normal(size=2000) > 0).astype(float)
    x_train, y_train, x_valid, y_valid = x[:1500], y[:1500], x[1500:], y[1500:]

    rng = np.random.default_rng(1)
    w, velocity = np.zeros(10), np.zeros(10)
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(x_train))
        for start in range(0, len(order), args.batch_size):
            batch = order[start:start + args.batch_size]
            p = 1 / (1 + np.exp(-x_train[batch] @ w))
            grad = x_train[batch].T @ (p - y_train[batch]) / len(batch)
            velocity = args.momentum * velocity - args.lr * grad
            w += velocity
        p = np.clip(1 / (1 + np.exp(-x_valid @ w)), 1e-7, 1 - 1e-7)
        loss = -np.mean(y_valid * np.log(p) + (1 - y_valid) * np.log(1 - p))
        accuracy = np.mean((p > 0.5) == y_valid)
        print(f"epoch={epoch} loss={loss:.5f} accuracy={accuracy:.4f}", flush=True)


if __name__ == "__main__":
    main()
