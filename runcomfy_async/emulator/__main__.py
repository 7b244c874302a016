"""``python -m runcomfy_async.emulator``: serve a local RunComfy until Ctrl-C."""

from runcomfy_async.emulator import main

raise SystemExit(main())
