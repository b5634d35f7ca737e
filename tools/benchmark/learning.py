"""Does the pipeline learn? Runs the demo (pre-train -> fine-tune -> evaluate) on the synthetic
demo set and prints the pre-training loss per epoch, the test UAR/WAR against chance, and the time.

    .venv/bin/python -m tools.benchmark.learning [--out DIR] [--pt_epochs 4] [--ft_epochs 40]
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from engine.cli import HelpFormatter

REPO = Path(__file__).resolve().parents[2]


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out", default="demo_output/learning", help="working folder (demo data and runs)")
    p.add_argument("--pt_epochs", type=int, default=4, help="pre-training epochs")
    p.add_argument("--ft_epochs", type=int, default=40, help="fine-tuning epochs")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    out = Path(args.out).resolve()
    data, runs = out / "data", out / "runs"
    if runs.exists():
        import shutil
        shutil.rmtree(runs)  # a fresh run every time: no resumed epochs in the timing
    env = {**os.environ, "DATA": str(data), "OUT": str(runs), "PT_EPOCHS": str(args.pt_epochs),
           "FT_EPOCHS": str(args.ft_epochs), "PYTHON": sys.executable}
    if not (data / "train.csv").exists():
        subprocess.run([sys.executable, "-m", "datasets.demo", "--out", str(data)], cwd=REPO, check=True)
    start = time.time()
    subprocess.run(["bash", str(REPO / "scripts/demo/run_demo.sh")], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    elapsed = time.time() - start

    losses = [json.loads(line)["train_loss"] for line in (runs / "pretrain/log.txt").read_text().splitlines()]
    metrics = json.loads((runs / "eval/metrics.json").read_text())
    print(f"pre-training loss per epoch: {', '.join(f'{v:.4f}' for v in losses)}")
    print(f"test UAR {metrics['uar']:.2f}  WAR {metrics['war']:.2f}  ({metrics['num_samples']} videos, "
          f"{len(metrics['confusion_matrix'])} classes, chance {100 / len(metrics['confusion_matrix']):.1f})")
    print(f"wall time {elapsed:.0f} s for pre-training {args.pt_epochs} + fine-tuning {args.ft_epochs} epochs + test")


if __name__ == "__main__":
    main()
