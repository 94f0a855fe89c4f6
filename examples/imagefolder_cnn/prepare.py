"""Write Fashion-MNIST as PNG files in the ImageFolder layout annealbench reads:

    fashion-folder/train/<class>/<n>.png     (--per-class images of each class)
    fashion-folder/test/<class>/<n>.png      (--test-per-class images of each class)

Stands in for your own photos: any folder laid out like this is a dataset (all images of
one size; class indices follow the sorted class-folder names).

    python prepare.py                        # 600 train + 100 test images per class
"""

import argparse
from pathlib import Path

from PIL import Image
from torchvision.datasets import FashionMNIST

from annealbench import data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("fashion-folder"))
    parser.add_argument("--per-class", type=int, default=600, help="train images per class")
    parser.add_argument("--test-per-class", type=int, default=100, help="test images per class")
    args = parser.parse_args()

    # annealbench finds Fashion-MNIST's files (Debian's package, else a download) and
    # puts them under its data root ($ANNEALBENCH_DATA), where torchvision reads them.
    data.load("fashion-mnist", subset=1)  # subset=1: we only need the files in place
    root = str(data.default_root())
    for split, per_class in (("train", args.per_class), ("test", args.test_per_class)):
        source = FashionMNIST(root, train=split == "train")
        # Folder names sort in label order ("0-T-shirt-top" ... "9-Ankle-boot"), so the
        # class indices ImageFolder assigns are Fashion-MNIST's own; "/" cannot be in a name.
        names = [
            f"{i}-{c.replace('/', '-').replace(' ', '-')}" for i, c in enumerate(source.classes)
        ]
        written = [0] * len(names)
        for n, label in enumerate(source.targets.tolist()):
            if written[label] < per_class:  # keep the first per_class images of each class
                folder = args.out / split / names[label]
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(source.data[n].numpy()).save(folder / f"{n:05d}.png")
                written[label] += 1
            if min(written) == per_class:
                break
        print(f"{args.out / split}: {sum(written)} images in {len(names)} classes")


if __name__ == "__main__":
    main()
