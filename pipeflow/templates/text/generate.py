"""Write a sample ticket table to data/tickets.csv (deterministic; no network).

    python generate.py                 # 2,000 tickets
    python generate.py --rows 20000 --seed 3

Replace the file with your own table (same columns, or edit pipeline.yaml to match yours).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeflow.sample_data import write_sample

OUT = Path(__file__).with_name("data") / "tickets.csv"
PHRASES = {
    "billing": ["charged twice", "refund not received", "wrong amount on my invoice",
                "cancel my subscription payment", "card was declined", "update billing address"],
    "bug": ["app crashes when I open it", "error message on checkout", "page does not load",
            "button does nothing", "export produces an empty file", "sync fails every time"],
    "account": ["cannot log in", "reset my password", "change the email on my account",
                "two factor code never arrives", "delete my account", "locked out after update"],
    "shipping": ["parcel has not arrived", "tracking number does not work", "wrong item delivered",
                 "package arrived damaged", "change my delivery address", "delivery is late"],
}  # fmt: skip
OPENERS = ["Hi,", "Hello team,", "URGENT:", "", "Good morning,", "Please help:"]
CLOSERS = ["Thanks.", "", "Regards", "Please fix ASAP!", "Order attached."]


def generate(rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Tickets written as customers write them: greetings, capitals, stray spaces, and about one
    in twelve filed under the wrong category (labels are never perfect)."""
    rng = np.random.default_rng(seed)
    categories = list(PHRASES)
    category = rng.choice(categories, rows, p=[0.3, 0.3, 0.25, 0.15])
    messages = []
    for cat in category:
        phrase = PHRASES[cat][rng.integers(len(PHRASES[cat]))]
        if rng.random() < 0.3:
            phrase = phrase.upper()
        text = f"{OPENERS[rng.integers(len(OPENERS))]}  {phrase}. {CLOSERS[rng.integers(len(CLOSERS))]}"
        messages.append(text.strip())
    noisy = rng.random(rows) < 0.08
    category[noisy] = rng.choice(categories, int(noisy.sum()))
    return pd.DataFrame(
        {
            "ticket_id": [f"T{i:06d}" for i in range(rows)],
            "message": messages,
            "channel": rng.choice(["email", "chat", "phone"], rows, p=[0.5, 0.35, 0.15]),
            "category": category,
        }
    )


if __name__ == "__main__":
    write_sample(generate, OUT, __doc__)
