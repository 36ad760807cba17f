"""Write pipeflow/store/sklearn_estimators.json: what ``sklearn.utils.all_estimators()`` returns
with the installed scikit-learn, for the installed skops (pipeflow/store/skops_import.py says why:
``import skops.io`` then skips walking all of scikit-learn). tests/store/test_skops_import.py fails
while the committed file differs from what the real call returns; then run

    python tools/sklearn_estimators.py
"""

from __future__ import annotations

import json


def main() -> None:
    import sklearn
    import skops

    from pipeflow.store.skops_import import ESTIMATORS, estimators_now

    head = json.dumps({"scikit-learn": sklearn.__version__, "skops": skops.__version__})[:-1]
    rows = ",\n".join(_row(row) for row in estimators_now())
    ESTIMATORS.write_text(f'{head}, "estimators": [\n{rows}\n]}}\n')


def _row(row: list[str]) -> str:
    """A row a line (diffable), or a field a line where that is over 100 columns."""
    text = f"    {json.dumps(row)}"
    if len(text) < 100:
        return text
    return "    [\n" + ",\n".join(f"        {json.dumps(field)}" for field in row) + "\n    ]"


if __name__ == "__main__":
    main()
