"""Traffic for a guarded fleet: one row at a time round the replicas, each labelled at the next.

Used by docs/serving.md (section "Guard: automatic rollback of the primary"). For SECONDS it
posts one row of scikit-learn's bundled breast-cancer data (no download) at a time to
``/v1/models/MODEL/predict``, round the replicas of URLS, and posts each answer's true diagnosis
as feedback to the *next* replica round URLS (so the guard's live accuracy is the fleet's, read
from the store's journal, not what one replica saw).

Arguments::

    python docs/examples/fleet_client.py URLS SECONDS [--model tumours]

``URLS`` is one server's URL or several separated by commas. It prints the answers counted by
``(status, version)`` (status 0: no answer, the connection failed), then how many feedback posts
were recorded, and exits 0 (1 if no request was answered 200).

The project it expects: the registry test project (``tests/registry/project`` with the
``data.csv`` that ``pipeflow.testing.tumour_table`` writes, run once: ``tumours`` v1 in
``production``); docs/serving.md shows the commands that make it and a version 2 trained on
flipped diagnoses (``docs/examples/mislabelled.py``) for the guard to roll back. The same client
as ``ab_client.py`` (imported from beside it), without the user key. Only httpx, the standard
library and scikit-learn's bundled data.
"""

from __future__ import annotations

import sys

from ab_client import arguments, traffic  # beside this file: python puts its folder on the path


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, argv, keyed=False)
    return traffic(args.urls, args.seconds, args.model, users=None)


if __name__ == "__main__":
    sys.exit(main())
