"""The steps of {{project}}: plain functions the spec's ``python`` stages call by name.

Each takes its inputs as keyword arguments (a table arrives as a pandas DataFrame) and returns
its output; pipeflow stores the result, caches it by content and reruns the function only when
its code, its configuration or its inputs change.
"""

from __future__ import annotations

import pandas as pd


def clean_text(data: pd.DataFrame) -> pd.DataFrame:
    """Lower case, single spaces: the same message typed two ways reads the same."""
    out = data.copy()
    out["message"] = out["message"].str.lower().str.split().str.join(" ")
    return out
