"""Write a sample customer table to data/customers.csv (deterministic; no network).

    python generate.py                 # 2,000 customers
    python generate.py --rows 20000 --seed 3

Replace the file with your own table (same columns, or edit pipeline.yaml to match yours).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeflow.sample_data import write_sample

OUT = Path(__file__).with_name("data") / "customers.csv"


def generate(rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Customers whose chance of leaving rises with charges and support calls, falls with tenure
    and a longer contract; a few blanks and impossible values, as real exports have."""
    rng = np.random.default_rng(seed)
    contract = rng.choice(["monthly", "yearly", "two-year"], rows, p=[0.55, 0.3, 0.15])
    tenure = rng.integers(0, 72, rows)
    charges = np.round(rng.normal(65, 25, rows).clip(10, 200), 2)
    calls = rng.poisson(1.5, rows)
    region = rng.choice(["north", "south", "east", "west"], rows)
    score = (
        0.03 * (charges - 65)
        + 0.6 * calls
        - 0.05 * tenure
        - np.select([contract == "yearly", contract == "two-year"], [1.5, 3.0], 0.0)
    )
    churned = np.where(score + rng.logistic(0, 0.6, rows) > 0.5, "yes", "no")
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i:06d}" for i in range(rows)],
            "tenure_months": tenure,
            "monthly_charges": charges,
            "contract": contract,
            "support_calls": calls,
            "region": region,
            "churned": churned,
        }
    )
    frame.loc[rng.choice(rows, rows // 100, replace=False), "monthly_charges"] = np.nan
    frame.loc[rng.choice(rows, rows // 200, replace=False), "tenure_months"] = -1  # bad rows
    return frame


if __name__ == "__main__":
    write_sample(generate, OUT, __doc__)
