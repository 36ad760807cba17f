"""scikit-learn's bundled breast-cancer dataset as a table (no download)."""

from __future__ import annotations

import pandas as pd


def load() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns=lambda c: c.replace(" ", "_"))
    frame["diagnosis"] = frame.pop("target").map({0: "malignant", 1: "benign"})
    # a coarse band of tumour size, to see whether the model is as good on small and large ones
    frame["size_band"] = pd.cut(
        frame["mean_radius"], [0, 12, 16, 100], labels=["small", "medium", "large"]
    ).astype(str)
    return frame
