"""A validation split for a protocol that has none (DFEW, FERV39k, MAFW, ...): a seeded,
class-stratified part of train.csv held out as val.csv, so that selecting a checkpoint does not
look at the test split.

    python -m datasets.holdout splits/dfew --out splits/dfew_val [--fraction 0.1] [--seed 0]

SRC is a split folder (train.csv, test.csv) or a folder of them (split01/, split02/, ...: each is
done, into the same sub-folder of OUT). Each output folder gets train.csv (train.csv less the
held-out lines), val.csv (the held-out lines) and test.csv (a copy), and classes.txt when SRC has
one. Lines are copied as they are, in their order, so paths resolve as before against
--data_root. Nothing in SRC changes; an OUT that already holds any of these files is refused.

Classification lines are stratified by class (each class keeps its share in both parts);
regression lines (several targets) are held out at random. Samples that belong together
(clips of one video or person) are not kept together: where the test split is person-independent,
the validation split is then not, and its scores run higher than the test's.
"""
import argparse
import os
import shutil
import sys

from sklearn.model_selection import train_test_split

from .annotations import AnnotationError, read_annotations

FILES = ("train.csv", "val.csv", "test.csv")


class HoldoutError(ValueError):
    """Inputs that cannot be split as asked (the message says why)."""


def split_folders(src):
    """``[(relative name, folder)]``: SRC itself if it holds train.csv, else its sub-folders that do."""
    if os.path.isfile(os.path.join(src, "train.csv")):
        return [(".", src)]
    subs = sorted(d for d in os.listdir(src) if os.path.isfile(os.path.join(src, d, "train.csv"))) \
        if os.path.isdir(src) else []
    if not subs:
        raise HoldoutError(f"{src} holds no train.csv, nor sub-folders with one")
    return [(d, os.path.join(src, d)) for d in subs]


def hold_out(folder, fraction, seed):
    """``(train lines, val lines, stratified)`` of ``folder``/train.csv, each in file order."""
    if os.path.isfile(os.path.join(folder, "val.csv")):
        raise HoldoutError(f"{folder} already has a val.csv: select on it as it is")
    if not os.path.isfile(os.path.join(folder, "test.csv")):
        raise HoldoutError(f"{folder} has no test.csv")
    path = os.path.join(folder, "train.csv")
    samples = read_annotations(path, data_root="/")  # checks every line; paths are not used
    with open(path, encoding="utf-8-sig") as f:
        lines = f.read().splitlines()
    stratified = all(isinstance(s.label, int) for s in samples)
    labels = [s.label for s in samples] if stratified else None
    try:
        kept, held = train_test_split(samples, test_size=fraction, random_state=seed, stratify=labels)
    except ValueError as e:
        raise HoldoutError(f"{path}: cannot hold out {fraction} of {len(samples)} lines"
                           f"{' by class' if stratified else ''}: {e}") from None
    by_line = sorted(kept, key=lambda s: s.line), sorted(held, key=lambda s: s.line)
    return [lines[s.line - 1] for s in by_line[0]], [lines[s.line - 1] for s in by_line[1]], stratified


def write(out, train, val, src):
    """The three files (and classes.txt) into ``out``, each complete before it gets its name."""
    os.makedirs(out, exist_ok=True)
    taken = [n for n in FILES if os.path.exists(os.path.join(out, n))]
    if taken:
        raise HoldoutError(f"{out} already holds {', '.join(taken)}: choose another --out (nothing was written)")
    pending = [("train.csv", train), ("val.csv", val)]
    for name, lines in pending:
        with open(os.path.join(out, f".{name}.tmp"), "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)
    for extra in ("test.csv", "classes.txt"):
        if os.path.isfile(os.path.join(src, extra)):
            shutil.copyfile(os.path.join(src, extra), os.path.join(out, f".{extra}.tmp"))
            pending.append((extra, None))
    for name, _ in pending:
        os.replace(os.path.join(out, f".{name}.tmp"), os.path.join(out, name))


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="See the module docstring (python -m pydoc datasets.holdout) for details.")
    p.add_argument("src", help="split folder with train.csv and test.csv, or a folder of such folders")
    p.add_argument("--out", required=True, help="new folder for train.csv, val.csv, test.csv (not SRC)")
    p.add_argument("--fraction", type=float, default=0.1, help="share of train.csv held out as val.csv")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw (the same seed, the same split)")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        if not 0 < args.fraction < 1:
            raise HoldoutError(f"--fraction must be between 0 and 1, not {args.fraction}")
        if os.path.abspath(args.out) == os.path.abspath(args.src):
            raise HoldoutError("--out must be a new folder, not SRC (its train.csv would be overwritten)")
        folders = split_folders(args.src)
        done = [(name, folder, *hold_out(folder, args.fraction, args.seed)) for name, folder in folders]
        for name, folder, train, val, _ in done:
            taken = [n for n in FILES if os.path.exists(os.path.join(args.out, name, n))]
            if taken:
                raise HoldoutError(f"{os.path.join(args.out, name)} already holds {', '.join(taken)}: choose "
                                   f"another --out (nothing was written)")
        for name, folder, train, val, stratified in done:
            out = os.path.normpath(os.path.join(args.out, name))
            write(out, train, val, folder)
            how = "stratified by class" if stratified else "at random (regression targets)"
            print(f"{out}: {len(train)} train, {len(val)} val ({how}, seed {args.seed}) from {folder}/train.csv; "
                  f"test.csv copied")
    except (HoldoutError, AnnotationError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("Paths are copied as they are: pass the same --data_root as before, and --data_path the new folder.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
