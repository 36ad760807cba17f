"""Write a sample house table to data/houses.csv (deterministic; no network).

    python generate.py                 # 2,000 houses
    python generate.py --rows 20000 --seed 3

Replace the file with your own table (same columns, or edit pipeline.yaml to match yours).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeflow.sample_data import write_sample

OUT = Path(__file__).with_name("data") / "houses.csv"
REGIONS = {"centre": 5200.0, "suburbs": 3400.0, "coast": 4300.0, "rural": 2100.0}


def generate(rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Houses priced by area, region, age and a garage, with noise; a few impossible areas."""
    rng = np.random.default_rng(seed)
    region = rng.choice(list(REGIONS), rows)
    area = np.round(rng.gamma(6.0, 20.0, rows).clip(25, 600), 1)
    rooms = np.maximum(1, np.round(area / 28 + rng.normal(0, 0.8, rows))).astype(int)
    age = rng.integers(0, 120, rows)
    garage = rng.random(rows) < 0.45
    per_m2 = np.array([REGIONS[r] for r in region])
    price = area * per_m2 * (1 - 0.002 * age) + 15000 * garage + rng.normal(0, 20000, rows)
    frame = pd.DataFrame(
        {
            "house_id": [f"H{i:06d}" for i in range(rows)],
            "area_m2": area,
            "rooms": rooms,
            "age_years": age,
            "garage": garage,
            "region": region,
            "price": np.round(price.clip(20000, None), -2),
        }
    )
    frame.loc[rng.choice(rows, rows // 200, replace=False), "area_m2"] = 0.0  # bad rows
    return frame


if __name__ == "__main__":
    write_sample(generate, OUT, __doc__)
