"""The steps of {{project}}: plain functions the spec's ``python`` stages call by name.

Each takes its inputs as keyword arguments (a table arrives as a pandas DataFrame) and returns
its output; pipeflow stores the result, caches it by content and reruns the function only when
its code, its configuration or its inputs change.
"""

from __future__ import annotations

import pandas as pd


def add_features(data: pd.DataFrame) -> pd.DataFrame:
    """Columns the model reads besides the raw ones."""
    out = data.copy()
    out["charges_per_year"] = out["monthly_charges"] * 12
    return out
