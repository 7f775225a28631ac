"""Trial script for the multi-fidelity examples (hyperband.yaml, asha.yaml): numpy only, a fraction of a second.

Softmax regression by mini-batch SGD with momentum on a fixed synthetic 4-class data set. ``--num-epochs`` is the
resource the algorithm hands out; the script prints Katib's default metrics format once per epoch
(``epoch=3 loss=0.61234 accuracy=0.7890``), so more epochs mean a lower validation loss for a good learning rate.
"""

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-epochs", type=int, required=True)
    parser.add_argument("--epoch-seconds", type=float, default=0.0,
                        help="pause after each epoch, as real training would (lets early stopping act mid-trial)")
    args = parser.parse_args()

    data = np.random.default_rng(0)
    classes, features = 4, 20
    x = data.normal(size=(1200, features))
    w_true = data.normal(size=(features, classes))
    y = np.argmax(x @ w_true + data.gumbel(size=(1200, classes)), axis=1)
    x_train, y_train, x_valid, y_valid = x[:1000], y[:1000], x[1000:], y[1000:]

    rng = np.random.default_rng(1)
    w, velocity = np.zeros((features, classes)), np.zeros((features, classes))
    for epoch in range(1, args.num_epochs + 1):
        order = rng.permutation(len(x_train))
        for start in range(0, len(order), args.batch_size):
            batch = order[start:start + args.batch_size]
            logits = x_train[batch] @ w
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(batch)), y_train[batch]] -= 1
            velocity = args.momentum * velocity - args.lr * x_train[batch].T @ p / len(batch)
            w += velocity
        logits = x_valid @ w
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = -np.mean(log_p[np.arange(len(y_valid)), y_valid])
        accuracy = np.mean(np.argmax(logits, axis=1) == y_valid)
        print(f"epoch={epoch} loss={loss:.5f} accuracy={accuracy:.4f}", flush=True)
        time.sleep(args.epoch_seconds)


if __name__ == "__main__":
    main()
