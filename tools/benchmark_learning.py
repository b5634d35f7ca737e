"""Does the pipeline learn? Runs the demo (pre-train -> fine-tune -> evaluate) on the synthetic
demo set within a fixed budget and prints the pre-training loss per epoch, UAR/WAR and the time,
against the targets (loss falls; WAR >= 90% with 6 classes; <= 10 minutes on 2 CPU cores).

    .venv/bin/python tools/benchmark_learning.py [--out DIR] [--pt_epochs 4] [--ft_epochs 40]
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--out", default="demo_output/learning", help="working folder (demo data and runs)")
    p.add_argument("--pt_epochs", type=int, default=4)
    p.add_argument("--ft_epochs", type=int, default=40)
    p.add_argument("--budget_s", type=float, default=600.0)
    args = p.parse_args()
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
    falls = all(b < a for a, b in zip(losses, losses[1:]))
    print(f"pre-training loss per epoch: {', '.join(f'{v:.4f}' for v in losses)}  "
          f"[{'PASS' if falls else 'FAIL'}: falls every epoch]")
    print(f"test UAR {metrics['uar']:.2f}  WAR {metrics['war']:.2f}  ({metrics['num_samples']} videos, "
          f"{len(metrics['confusion_matrix'])} classes, chance {100 / len(metrics['confusion_matrix']):.1f})  "
          f"[{'PASS' if metrics['war'] >= 90 else 'FAIL'}: WAR >= 90]")
    print(f"wall time {elapsed:.0f} s for pre-training {args.pt_epochs} + fine-tuning {args.ft_epochs} epochs + test  "
          f"[{'PASS' if elapsed <= args.budget_s else 'FAIL'}: <= {args.budget_s:.0f} s]")


if __name__ == "__main__":
    main()
