"""Katib's darts trial entry point (``python3 run_trial.py --algorithm-settings=... ...``), run by katibx locally."""

from katibx.nas.run_trial import main

if __name__ == "__main__":
    raise SystemExit(main())
