"""Toy PBT trial (numpy only), after Katib's simple-pbt ``pbt_test.py``: training that resumes from a checkpoint.

The "accuracy" grows fastest when the learning rate is close to an optimum that depends on the accuracy
reached so far (a triangle wave: 0.001 -> 0.01 at 50% -> 0.001), so no fixed learning rate does well and
the population has to adapt it. Each trial loads ``<checkpoint>/training.json`` if present (a copy of its
parent's, put there by katibx or Katib), trains ``--epochs`` more steps, saves it and prints
``Validation-accuracy=...`` for the StdOut metrics collector.
"""

import argparse
import json
import os

import numpy as np


def optimal_lr(accuracy: float) -> float:
    midpoint = 50.0  # the optimum rises until 50% accuracy, then falls
    lr = 0.01 * accuracy / midpoint if accuracy < midpoint else 0.01 - 0.01 * (accuracy - midpoint) / midpoint
    return min(0.01, max(0.001, lr))


def step(accuracy: float, lr: float, rng: np.random.Generator) -> float:
    best = optimal_lr(accuracy)
    q_err = max(lr, best) / (min(lr, best) + np.finfo(float).eps)
    if q_err < 3:  # close enough to the optimum: progress, the faster the closer
        accuracy += rng.random() / q_err
    elif lr > best:  # far too large: lose ground
        accuracy -= (q_err - 3) * rng.random()
    accuracy += 2 * rng.normal()
    return min(100.0, max(0.0, accuracy))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=0.0001, help="learning rate")
    parser.add_argument("--epochs", type=int, default=20, help="training steps in this trial")
    parser.add_argument("--checkpoint", default=os.environ.get("KATIBX_CHECKPOINT_DIR", "/var/log/katib/checkpoints/"),
                        help="checkpoint directory (resume and save)")
    args = parser.parse_args()

    path = os.path.join(args.checkpoint, "training.json")
    state = {"step": 0, "accuracy": 0.0}
    if os.path.exists(path):
        with open(path) as f:
            state = json.load(f)
    rng = np.random.default_rng()
    for _ in range(args.epochs):
        state["accuracy"] = step(state["accuracy"], args.lr, rng)
        state["step"] += 1
    os.makedirs(args.checkpoint, exist_ok=True)
    with open(path, "w") as f:
        json.dump(state, f)
    print(f"epoch {state['step']}: lr={args.lr:.4f}")
    print(f"Validation-accuracy={state['accuracy'] / 100:.4f}")


if __name__ == "__main__":
    main()
