"""Helpers the trained pipelines reference by name (pipeflow.models)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeflow.models import as_strings


def test_as_strings_keeps_missing_values_missing_so_the_imputer_sees_them() -> None:
    column = pd.DataFrame({"region": ["north", None, math.nan, "south-east", 3, pd.NA]})
    out = as_strings(column)
    assert out.shape == (6, 1) and out.dtype == object
    values = out.ravel().tolist()
    assert values[0] == "north" and values[3] == "south-east" and values[4] == "3"
    # missing stays missing (an earlier version turned it into "na"/"nan" strings, a category
    # of its own that the SimpleImputer's '<missing>' never replaced)
    assert all(isinstance(v, float) and np.isnan(v) for v in (values[1], values[2], values[5]))
