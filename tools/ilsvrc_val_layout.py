"""Lay out the flat ILSVRC2012 validation folder as ``val/<wnid>/<file>`` (the ImageFolder layout).

    # a label file of 'ILSVRC2012_val_00000001.JPEG n01751748' lines (or Kaggle's LOC_val_solution.csv)
    python tools/ilsvrc_val_layout.py --val /data/imagenet/val --labels val_labels.txt
    # the devkit: ground truth (one ILSVRC2012_ID a line, in file order) and meta.mat (ID -> wnid)
    python tools/ilsvrc_val_layout.py --val /data/imagenet/val \\
        --labels ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt \\
        --meta ILSVRC2012_devkit_t12/data/meta.mat
    # leave the flat folder as it is: symbolic links in a new folder
    python tools/ilsvrc_val_layout.py --val /data/imagenet/val --labels val_labels.txt --out /data/imagenet/val_folders

Without ``--out`` the files are moved into class folders inside ``--val``. Every labelled
file must be there and every wnid must be a class of ``--train`` when given (the labels of the
two splits then match by name, as ImageFolder sorts classes by name); nothing is moved otherwise.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path


def read_labels(labels: Path, meta: Path | None, files: list[str]) -> dict[str, str]:
    """``{file name: wnid}`` from a label file (see the module docstring)."""
    if meta is not None:  # devkit: the n-th line is the ILSVRC2012_ID of the n-th file in name order
        from scipy.io import loadmat

        synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
        wnid_of = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
        ids = [int(line) for line in labels.read_text().split()]
        names = sorted(name for name in files if name.startswith("ILSVRC2012_val_"))
        if len(ids) != len(names):
            raise SystemExit(f"{labels} has {len(ids)} labels for {len(names)} ILSVRC2012_val_* files")
        return {name: wnid_of[i] for name, i in zip(names, ids)}
    text = labels.read_text()
    if text.startswith("ImageId"):  # Kaggle: ImageId,PredictionString ('n01751748 x y x y ...')
        rows = csv.DictReader(text.splitlines())
        return {f"{row['ImageId']}.JPEG": row["PredictionString"].split()[0] for row in rows}
    pairs = [line.replace(",", " ").split() for line in text.splitlines() if line.strip()]
    bad = [p for p in pairs if len(p) != 2 or not p[1].startswith("n")]
    if bad:
        raise SystemExit(f"{labels}: expected 'file wnid' lines, got {' '.join(bad[0])!r}")
    return {Path(name).name: wnid for name, wnid in pairs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val", required=True, type=Path, help="the flat validation folder")
    parser.add_argument("--labels", required=True, type=Path, help="label file (see above)")
    parser.add_argument("--meta", type=Path, help="the devkit's meta.mat (with the devkit ground truth)")
    parser.add_argument("--train", type=Path, help="the training folder: check that every wnid is one of its classes")
    parser.add_argument("--out", type=Path, help="write symbolic links into this folder instead of moving")
    args = parser.parse_args(argv)
    files = sorted(entry.name for entry in os.scandir(args.val) if entry.is_file())
    wnids = read_labels(args.labels, args.meta, files)
    missing = sorted(set(wnids) - set(files))
    if missing:
        print(f"error: {len(missing)} labelled file(s) are not in {args.val}, e.g. {missing[0]}", file=sys.stderr)
        return 2
    if args.train is not None:
        classes = {entry.name for entry in os.scandir(args.train) if entry.is_dir()}
        unknown = sorted(set(wnids.values()) - classes)
        if unknown:
            print(f"error: {len(unknown)} wnid(s) are not classes of {args.train}, e.g. {unknown[0]}", file=sys.stderr)
            return 2
    out = args.out or args.val
    for name, wnid in sorted(wnids.items()):
        (out / wnid).mkdir(parents=True, exist_ok=True)
        if args.out is None:
            os.replace(args.val / name, out / wnid / name)
        else:
            os.symlink((args.val / name).resolve(), out / wnid / name)
    unlabelled = len(files) - len(wnids)
    print(f"laid out {len(wnids)} images in {len(set(wnids.values()))} class folders under {out}"
          + (f"; {unlabelled} file(s) without a label left where they were" if unlabelled else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
