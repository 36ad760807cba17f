"""Two messy tables of house listings and estate agents, generated deterministically."""

from __future__ import annotations

import random

import pandas as pd

REGIONS = {"north": 1.0, "south": 1.4, "coast": 1.8, "city": 2.2}


def agents(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)
    return pd.DataFrame(
        {
            "agent_id": [f"A{i:03d}" for i in range(n)],
            "region": [rng.choice(sorted(REGIONS)) for _ in range(n)],
        }
    )


def listings(n: int, seed: int) -> pd.DataFrame:
    """Prices like "$412,000.00", condition ratings like "87%", garages as yes/no/t/f/1/0."""
    rng = random.Random(seed)
    regions = agents()["region"].tolist()
    rows = []
    for i in range(n):
        agent = rng.randrange(len(regions))
        rooms = rng.randint(1, 7)
        area = rooms * rng.uniform(18, 30)
        condition = rng.uniform(0.4, 1.0)
        garage = rng.random() < 0.5
        price = (
            60_000
            + area * 2_100 * REGIONS[regions[agent]] * (0.6 + 0.5 * condition)
            + (25_000 if garage else 0)
        ) * rng.uniform(0.93, 1.07)
        rows.append(
            {
                "listing": f"H{i:05d}",
                "agent_id": f"A{agent:03d}",
                "Asking Price": rng.choice([f"${price:,.2f}", f"{price:.0f}", f"USD {price:,.0f}"]),
                "condition": f"{condition * 100:.0f}%",
                "garage": rng.choice(["yes", "t", "1", "Y"] if garage else ["no", "f", "0", "N"]),
                "rooms": str(rooms),
                "area_m2": round(area, 1),
            }
        )
    return pd.DataFrame(rows)
