"""``python -m runcomfy_async.cli``: the console script."""

from . import main

raise SystemExit(main())
