"""annealbench from Python: your model and your arrays, no files to write first.

Compares three learning-rate methods for a small MLP on scikit-learn's handwritten digits
(1,797 8x8 images as rows of 64 pixels, 10 classes; shipped with scikit-learn, so nothing
is downloaded), then prints the summary and the paired tests. Rerun it to resume: runs
already in the store are not trained again.

    python python_api.py --epochs 10 --trials 3 --store digits.sqlite
"""

import argparse

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from annealbench import api


def build(input_shape, num_classes):
    """The model factory: called once per run with (features,) and the class count.
    Defined at module level, so annealbench stores it by its import path
    (``__main__:build``) and worker processes can import it again."""
    return nn.Sequential(
        nn.Linear(input_shape[0], 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--store", default="digits.sqlite", help="SQLite results file")
    parser.add_argument("--workers", type=int, default=1, help="training processes")
    args = parser.parse_args()

    x, y = load_digits(return_X_y=True)
    # A fixed-seed split, so a rerun hands annealbench the same arrays and resumes.
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype("float32"), y, test_size=0.25, stratify=y, random_state=0
    )
    study = api.study(
        "digits-mlp",
        datasets={"digits": (x_train, y_train, x_test, y_test)},
        models=[build],
        methods=[
            "sig+",  # the paper's: warmup, then sigmoid decay
            "adam",  # Adam at a constant 1e-3
            # A method of your own: SGD (momentum 0.9, weight decay 5e-4) under one-cycle.
            api.Method("sgd-onecycle", "sgd", "onecycle", description="SGD, one-cycle"),
        ],
        trials=args.trials,  # seeds 0..trials-1, shared by every method: paired tests
        epochs=args.epochs,
        validation=0.1,  # hold 10% of the training rows out; methods are chosen on them
    )
    outcome = api.run(study, args.store, workers=args.workers)
    print(f"{outcome.study}: {outcome.counts.get('done', 0)} of {outcome.total} runs done")

    res = api.results(args.store, "digits-mlp")  # pandas frames: the report's numbers
    # One row per (dataset, model, method): mean validation and test accuracy (%) over the
    # trials; "selected" marks the method with the best validation score.
    summary = res.summary[["method", "trials", "val_ave", "ave", "std", "selected"]]
    print("summary:")
    print(summary.round(2).to_string(index=False))
    # Paired tests of each method against the selected one and against sig+ (Holm-adjusted).
    tests = res.tests[["against", "reference", "method", "diff", "p_holm"]]
    print("paired tests:")
    print(tests.round(3).to_string(index=False))


# The guard matters: worker processes (--workers 2) import this script again, and must
# not start a study of their own when they do.
if __name__ == "__main__":
    main()
