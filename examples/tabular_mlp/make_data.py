"""Write data.npz: scikit-learn's breast cancer data (569 tumours x 30 features, 2 classes).

The four arrays are the .npz form annealbench reads (x_train, y_train, x_test, y_test).
The data ships inside scikit-learn, so nothing is downloaded.

    python make_data.py            # writes ./data.npz beside this script
"""

import argparse
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("data.npz"))
    args = parser.parse_args()

    x, y = load_breast_cancer(return_X_y=True)
    # Stratified, fixed-seed split: both splits keep the classes' proportions, and
    # rerunning the script writes the same file (so a study on it resumes, not restarts).
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, stratify=y, random_state=0
    )
    # Raw features, not standardized: annealbench normalizes each feature with the
    # training split's mean and std. Float32 features, integer class labels 0..C-1.
    np.savez(
        args.out,
        x_train=x_train.astype(np.float32),
        y_train=y_train.astype(np.int64),
        x_test=x_test.astype(np.float32),
        y_test=y_test.astype(np.int64),
    )
    print(f"wrote {args.out}: {len(y_train)} train, {len(y_test)} test, {x.shape[1]} features")


if __name__ == "__main__":
    main()
