"""``python -m vdir.fuse OPTIONS-JSON``: the process a background ``vdir mount`` starts."""

from __future__ import annotations

import sys

from vdir.fuse.mount import main

sys.exit(main())
