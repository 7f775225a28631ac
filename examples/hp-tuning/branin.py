"""A trial script with a known answer: the Branin-Hoo function, whose minimum 0.397887 lies at three points.

Prints Katib's default metrics format (``loss=value``), so katibx (or Katib) collects it from standard output.
Usage: python3 branin.py --x1=<-5..10> --x2=<0..15>
"""

import argparse
import math


def branin(x1: float, x2: float) -> float:
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--x1", type=float, required=True)
    parser.add_argument("--x2", type=float, required=True)
    args = parser.parse_args()
    print(f"loss={branin(args.x1, args.x2):.6f}", flush=True)


if __name__ == "__main__":
    main()
