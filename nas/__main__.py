"""``python -m nas`` runs Katib's DARTS trial (see :mod:`nas.run_trial`)."""

from nas.run_trial import main

raise SystemExit(main())
