"""Steps of the claims example: a deterministic generator of messy claims and their cleaning.

Production data is whatever shows up, so the generator produces what real intake systems do:
amounts as "$12,400.50" strings or blanks, categories in mixed case with stray spaces, three date
formats, duplicated submissions, negative and absurd amounts, empty descriptions.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta

import pandas as pd

CATEGORIES = {
    "collision": [
        "rear-ended at a red light",
        "hit a parked car while reversing",
        "collided with a truck on the highway",
        "side impact at an intersection",
        "bumper and headlight smashed in a car park",
        "vehicle slid on ice into a wall",
    ],
    "theft": [
        "car stolen from the driveway overnight",
        "laptop and bag taken from the vehicle",
        "bicycle stolen from the garage",
        "break-in, jewellery missing",
        "wallet and phone stolen on the train",
        "tools taken from the van",
    ],
    "water_damage": [
        "burst pipe flooded the kitchen",
        "roof leak during the storm soaked the ceiling",
        "washing machine hose failed",
        "basement flooded after heavy rain",
        "dishwasher leaked under the floorboards",
        "damp and mould after a leak",
    ],
    "fire": [
        "kitchen fire from an unattended pan",
        "electrical fault started a fire in the garage",
        "smoke damage from a neighbour's fire",
        "barbecue set the deck alight",
        "candle set the curtains on fire",
        "chimney fire damaged the roof",
    ],
    "liability": [
        "visitor slipped on the icy steps",
        "dog bit a passer-by",
        "tree fell onto the neighbour's fence",
        "customer injured in the shop",
        "falling tile hit a pedestrian",
        "guest tripped over a loose rug",
    ],
    "medical": [
        "broke an arm falling off a ladder",
        "emergency room visit after a fall",
        "physiotherapy after a sports injury",
        "ambulance transport after an accident",
        "stitches for a deep cut",
        "x-ray and cast for a sprained ankle",
    ],
}
# which policy a category usually comes under (claims are filed under the "wrong" one 20% of the time)
USUAL_POLICY = {
    "collision": "auto",
    "theft": "renters",
    "water_damage": "home",
    "fire": "home",
    "liability": "business",
    "medical": "health",
}
# log of a typical amount per category (fires cost more than stitches)
TYPICAL_AMOUNT = {
    "collision": 7.8,
    "theft": 7.0,
    "water_damage": 8.2,
    "fire": 9.0,
    "liability": 8.5,
    "medical": 7.2,
}
OPENERS = [
    "",
    "",
    "claimant reports ",
    "customer says ",
    "urgent: ",
    "as per phone call, ",
    "re claim - ",
]
FILLERS = [
    "",
    "",
    " yesterday",
    " last night",
    " on monday",
    " while on holiday",
    ", photos attached",
    ", police informed",
    ", please advise",
]
POLICIES = ["auto", "home", "renters", "business", "health"]
REGIONS = ["north", "south", "east", "west", "central"]


def describe(rng: random.Random, category: str) -> str:
    """A free-text description as a claimant would write it: a phrase of the category, noise
    around it, and sometimes a phrase of another category (a kitchen fire that also flooded...)."""
    text = rng.choice(OPENERS) + rng.choice(CATEGORIES[category]) + rng.choice(FILLERS)
    if rng.random() < 0.10:
        other = rng.choice([c for c in CATEGORIES if c != category])
        text += " and " + rng.choice(CATEGORIES[other])
    if rng.random() < 0.03:  # written so vaguely that only the adjuster knew what it was
        text = rng.choice(OPENERS) + rng.choice(CATEGORIES[rng.choice(sorted(CATEGORIES))])
    if rng.random() < 0.05:
        text = text.upper()
    return text


def _messy_amount(rng: random.Random, amount: float) -> object:
    roll = rng.random()
    if roll < 0.02:
        return None
    if roll < 0.03:
        return "n/a"
    if roll < 0.04:
        return -amount
    if roll < 0.25:
        return f"${amount:,.2f}"
    if roll < 0.35:
        return f"{amount:.2f} USD"
    return round(amount, 2)


def _messy_date(rng: random.Random, day: date) -> str:
    fmt = rng.choice(["%Y-%m-%d", "%d/%m/%Y", "%b %d %Y"])
    return "" if rng.random() < 0.01 else day.strftime(fmt)


# Phrasing that appears as the world changes (drift): new vehicles, new scams, new weather.
DRIFTED = {
    "collision": ["e-scooter rider hit the side of the car", "delivery robot scraped the door"],
    "theft": ["keyless entry relay attack, car gone", "parcel taken from the doorstep"],
    "water_damage": ["heat pump leaked through the ceiling", "flash flood through the ground floor"],
    "fire": ["e-bike battery caught fire in the hallway", "solar inverter overheated and burned"],
    "liability": ["drone fell onto a neighbour's car", "guest hurt on the trampoline"],
    "medical": ["treatment after an e-scooter fall", "heatstroke during the heatwave"],
}


def generate_claims(n: int, seed: int, month: int = 0, drift: float = 0.0) -> pd.DataFrame:
    """``n`` claims of month ``month`` (0 = October 2026); the same arguments always give the
    same table. ``drift`` (0..1) moves the batch away from what a model trained on month 0 saw:
    more fires and water damage, amounts inflated, and new phrasing in that share of claims."""
    rng = random.Random(seed * 1000 + month)
    start = date(2026, 10, 1) + timedelta(days=30 * month)
    weights = [1 + drift * (2 if c in ("fire", "water_damage") else 0) for c in sorted(CATEGORIES)]
    rows = []
    for i in range(n):
        category = rng.choices(sorted(CATEGORIES), weights=weights)[0]
        text = describe(rng, category)
        if rng.random() < drift:
            text = rng.choice(DRIFTED[category])
        if rng.random() < 0.02:
            text = ""
        spelled = rng.choice(
            [category, category.upper(), f" {category.title()} ", category.replace("_", " ")]
        )
        rows.append(
            {
                "claim_id": f"C{seed % 1000:03d}-{month * 100_000 + i:06d}",
                "policy_type": USUAL_POLICY[category]
                if rng.random() < 0.8
                else rng.choice(POLICIES),
                "region": rng.choice(REGIONS),
                "submitted": _messy_date(rng, start + timedelta(days=rng.randrange(30))),
                "amount": _messy_amount(rng, rng.lognormvariate(TYPICAL_AMOUNT[category] + 0.5 * drift, 0.9)),
                "description": text,
                "category": spelled,
            }
        )
        if rng.random() < 0.03:  # resubmitted by the claimant
            rows.append(dict(rows[-1]))
    frame = pd.DataFrame(rows)
    frame["amount"] = frame["amount"].astype(str)
    return frame


def _parse_amount(value: str) -> float | None:
    text = value.replace("$", "").replace(",", "").replace("USD", "").strip()
    try:
        return float(text)
    except ValueError:
        return None


def _parse_date(value: str) -> str | None:
    for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%b %d %Y"):
        try:
            return datetime.strptime(value.strip(), fmt).date().isoformat()
        except ValueError:
            continue
    return None


def clean_claims(raw: pd.DataFrame, max_amount: float) -> dict[str, pd.DataFrame]:
    """Repair what can be repaired; every other row goes to ``rejected`` with its reason."""
    known = set(CATEGORIES)
    clean, rejected, seen = [], [], set()
    for row in raw.to_dict("records"):
        reason = None
        category = str(row["category"]).strip().lower().replace(" ", "_")
        amount = _parse_amount(str(row["amount"]))
        submitted = _parse_date(str(row["submitted"]))
        if row["claim_id"] in seen:
            reason = "duplicate claim_id"
        elif category not in known:
            reason = f"unknown category {row['category']!r}"
        elif amount is None:
            reason = f"amount {row['amount']!r} is not a number"
        elif not 0 < amount <= max_amount:
            reason = f"amount {amount} outside (0, {max_amount}]"
        elif submitted is None:
            reason = f"submitted {row['submitted']!r} is not a date"
        elif not str(row["description"]).strip():
            reason = "empty description"
        seen.add(row["claim_id"])
        if reason:
            rejected.append({**row, "reason": reason})
        else:
            clean.append({**row, "category": category, "amount": amount, "submitted": submitted})
    columns = [*raw.columns]
    return {
        "clean": pd.DataFrame(clean, columns=columns),
        "rejected": pd.DataFrame(rejected, columns=[*columns, "reason"]),
    }


def summarise(
    clean: pd.DataFrame,
    rejected: pd.DataFrame,
    by_category: pd.DataFrame,
    scores: dict,
    training: dict,
) -> dict:
    reasons = rejected["reason"].str.split(" ", n=1).str[0].value_counts().sort_index()
    return {
        "claims_received": int(len(clean) + len(rejected)),
        "claims_clean": int(len(clean)),
        "claims_rejected": int(len(rejected)),
        "rejected_by_reason": {str(k): int(v) for k, v in reasons.items()},
        "by_category": by_category.to_dict("records"),
        "model": {
            "estimator": training["estimator"],
            "trained_on_rows": training["rows_train"],
            "held_out_rows": scores["rows"],
            "accuracy": round(scores["accuracy"], 4),
            "f1_macro": round(scores["f1_macro"], 4),
            "accuracy_by_region": {
                k: round(v["accuracy"], 4) for k, v in scores["slices"]["region"].items()
            },
        },
    }
