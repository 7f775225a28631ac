"""``python -m katibx.nas`` runs Katib's DARTS trial (see :mod:`katibx.nas.run_trial`)."""

from katibx.nas.run_trial import main

raise SystemExit(main())
