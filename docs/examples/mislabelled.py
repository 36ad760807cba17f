"""Register a bad version of the registry test project's model, for the guard to roll back.

Used by docs/serving.md (section "Guard: automatic rollback of the primary"). Run in the
project's folder after its first run (``tumours`` v1 in ``production``), it registers a
``tumours`` version trained on the project's ``data.csv`` with every diagnosis flipped: fast,
never fails, takes the same rows as version 1 (it is registered with version 1's signature and
reference profile), looks fine offline (recorded accuracy 0.97, as its evaluation data was
flipped too), and is wrong on almost every live row. It is registered, not promoted: promoting
it is the reader's step. It prints the new version's number.

Arguments::

    python docs/examples/mislabelled.py [--project .] [--store PROJECT/.pipeflow]

The project it expects: the registry test project (``tests/registry/project`` with the
``data.csv`` that ``pipeflow.testing.tumour_table`` writes, run once). The tests'
``register_mislabelled_model`` (tests/helpers.py) runs :func:`register` of this file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(project: Path, store: Path) -> int:
    """Train the flipped model on ``project``'s data.csv and register it in ``store`` with
    version 1's signature and reference profile; its version number."""
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from pipeflow.registry import Registry
    from pipeflow.store.artifacts import ArtifactStore

    frame = pd.read_csv(project / "data.csv")
    flipped = frame["diagnosis"].map({"benign": "malignant", "malignant": "benign"})
    features = frame.drop(columns=["diagnosis"])
    numeric = [c for c in features.columns if c != "size_band"]
    model = make_pipeline(
        make_column_transformer(
            (StandardScaler(), numeric), (OneHotEncoder(handle_unknown="ignore"), ["size_band"])
        ),
        LogisticRegression(max_iter=5000),
    ).fit(features, flipped)
    st = ArtifactStore(str(store))
    registry = Registry(st)
    first = registry.version("tumours", 1)  # a PipeflowError before the project's first run
    record = registry.register(
        "tumours",
        st.save(model, "model"),
        metrics={"accuracy": 0.97},
        signature=first["signature"],
        reference=first.get("reference"),
    )
    return int(record["version"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", default=".", help="the project's folder (with data.csv)")
    parser.add_argument("--store", help="the store (default: the project's .pipeflow)")
    args = parser.parse_args(argv)
    project = Path(args.project)
    store = Path(args.store) if args.store else project / ".pipeflow"
    if not (project / "data.csv").is_file():
        parser.error(f"--project: {project} has no data.csv (the registry test project's)")

    from pipeflow.errors import PipeflowError

    try:
        version = register(project, store)
    except PipeflowError as exc:
        print(f"error: {store}: {exc} (run the project once first: pipeflow run pipeline.yaml)")
        return 1
    print(f"registered tumours@{version} (trained on flipped diagnoses)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
