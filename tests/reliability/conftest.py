"""Fault tests: killed workers, killed runs, killed SQLite writers, crowds of writers, disks that
refuse writes, and store URLs nobody answers. Each ends with :func:`check_store` finding nothing.

They signal processes, read /proc and set resource limits, which is Linux behaviour: elsewhere
they are not collected.
"""

from __future__ import annotations

import sys

collect_ignore_glob = [] if sys.platform.startswith("linux") else ["test_*.py"]
