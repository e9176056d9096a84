"""The parser of ``robustscale datasets [NAME]`` (built for every start of the CLI: no heavy imports; see cli.py)."""
from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "datasets",
        help="list supported datasets and where their files are; inspect one",
        description="Without NAME: list the supported datasets (classes, image shape, split sizes, whether "
        "their files were found and where). With NAME: load both splits through the real loader and print "
        "their sizes, the image shape, the classes and the location. Files are searched in --data-dir, "
        "$ROBUSTSCALE_DATA, /usr/share/datasets (Debian's dataset-fashion-mnist) and "
        "~/.cache/robustscale/data; --download fetches CIFAR/MNIST/Fashion-MNIST with torchvision.",
    )
    p.add_argument("name", nargs="?", metavar="NAME",
                   help="cifar10, cifar100, fashion_mnist, mnist or imagefolder")
    p.add_argument("--data-dir", metavar="DIR", help="folder holding the dataset (searched first)")
    p.add_argument("--download", action="store_true", help="download NAME with torchvision if not found")
    p.add_argument("--input-size", type=int, default=None, metavar="PX",
                   help="imagefolder only: side of the square images after resize + center crop (default 224)")
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    p.set_defaults(handler="run")
