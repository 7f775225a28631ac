"""Trial script for the multi-objective example: a model size trades validation error against latency."""

import argparse
import math


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--lr", type=float, required=True)
    args = parser.parse_args()
    error = 1.0 / math.sqrt(args.width) + 0.5 * abs(math.log10(args.lr) + 2) ** 2 * 0.1
    latency = 0.02 * args.width
    print(f"error={error:.5f} latency={latency:.4f}")


if __name__ == "__main__":
    main()
