"""Katib's enas trial entry point (``python3 -u RunTrial.py --architecture=... --nn_config=... --num_epochs=N``),
run by katibx locally: the child network in PyTorch (katibx.nas.enas_trial)."""

from katibx.nas.enas_trial import main

if __name__ == "__main__":
    raise SystemExit(main())
