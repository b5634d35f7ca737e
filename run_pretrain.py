"""SVFAP masked video pre-training (single process, or torchrun / SLURM for several)."""
import argparse
import datetime
import json
import math
import sys
import time

import torch
from timm.utils import random_seed

from datasets.build import build_pretraining_dataset, multiple_samples_collate
from engine import distributed as dist
from engine.checkpoint import Checkpointer, resume, training_state
from engine.cli import HelpFormatter, RunError, UserError, run_entry
from engine.compile import first_step_line
from engine.config import resolve
from engine.interrupt import StopRequest, stop_run
from engine.loader import build_loader, resumable_epochs
from engine.logger import StepTrace, TensorboardLogger, append_log
from engine.optim import Schedules, batch_line, build_optimizer
from engine.options import add_common_args, bool_arg
from engine.pretrain import reconstruction_loss
from engine.provenance import data_fingerprints, trained_on
from engine.recipes import PRETRAIN, parser_defaults
from engine.runtime import PRECISIONS, grad_scaler, keep_freed_host_memory, wrap_model
from engine.train_step import Stepper, train_epoch
from models import MODEL_NAMES, create_model
from models.factory import config_kwargs
from models.tuning import parameter_counts


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_common_args(p)
    p.add_argument("--model", default="pretrain_svfap_base_patch16_160", metavar="NAME",
                   help=f"registered model: {', '.join(n for n in MODEL_NAMES if n.startswith('pretrain_'))}")
    p.add_argument("--decoder_depth", type=int, help="decoder blocks")
    p.add_argument("--mask_type", choices=["tube"], help="one random spatial mask shared by all time steps")
    p.add_argument("--mask_ratio", type=float, help="fraction of the spatial positions masked")
    bool_arg(p, "--normlize_target", True, "per-tubelet normalised pixel targets (the release's spelling)",
             aliases=("--normalize_target",))
    bool_arg(p, "--face_crop", False, "fixed upper-centre 160x160 crop of 224x224 face tracks (VoxCeleb2)")
    p.add_argument("--num_samples", "--num_sample", dest="num_samples", default=1, type=int,
                   help="clips sampled per decoded video")
    p.add_argument("--data_set", default="VOXCELEB2", help="the pre-training set (its registry entry)")
    p.set_defaults(save_ckpt_freq=10, **parser_defaults(PRETRAIN))
    return p


def main(args):
    resolve(args, "pretrain")
    device = torch.device(args.device)
    if device.type == "cpu":
        keep_freed_host_memory()
    random_seed(args.seed, dist.get_rank())
    amp = PRECISIONS[args.amp]
    print(f"args: {json.dumps(vars(args), default=str)}")

    model = create_model(args.model, drop_path_rate=args.drop_path,
                         **config_kwargs(vars(args), pretrain=True))
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    model.to(device)
    n_parameters = parameter_counts(model)[0]  # trained ones, as mae and VideoMAE log them
    print(f"model {args.model}: {n_parameters / 1e6:.2f}M parameters")

    data = trained_on(data_fingerprints(args, "pretrain"))
    dataset = build_pretraining_dataset(args)
    collate = multiple_samples_collate if args.num_samples > 1 else None
    loader = build_loader(dataset, args, train=True, collate_fn=collate)
    steps_per_epoch = len(loader) // args.update_freq
    if steps_per_epoch == 0:
        raise UserError(f"{len(dataset)} clips give no full batch of {args.batch_size} x {args.world_size} "
                        f"processes; lower --batch_size")
    print(f"{len(dataset)} videos, {steps_per_epoch} steps/epoch, {batch_line(args)}")

    model_ddp = wrap_model(model, args, device)
    optimizer = build_optimizer(args, model)
    scaler = grad_scaler(device, amp)
    schedules = Schedules(args, optimizer, steps_per_epoch)
    checkpointer = Checkpointer(args.output_dir, args.keep_last, save=args.save_ckpt)
    checkpointer.remove_stale_temps()
    start_epoch, start_it, resumed = resume(args, checkpointer, model, optimizer, scaler, data=data)
    start_epoch = max(args.start_epoch, start_epoch)
    partial = (resumed or {}).get("partial")
    del resumed
    stepper = Stepper(model_ddp, optimizer, schedules, scaler, args)
    if args.compile:
        stepper.after_first_step = lambda: print(first_step_line())
    compute_loss = reconstruction_loss(model_ddp, device, amp, args.normlize_target,
                                       num_masked=dataset.mask_generator.num_masked)
    tb = TensorboardLogger(args.log_dir)
    trace = StepTrace(args.trace_steps)

    def state(epoch, **extra):
        return training_state(model, optimizer, scaler, None, args, epoch, data=data, **extra)

    print(f"start training for {args.epochs} epochs from epoch {start_epoch}")
    start = time.time()
    with StopRequest() as stop:
        for epoch, skip in resumable_epochs(loader, start_epoch, start_it, args.epochs):
            stats = train_epoch(model_ddp, loader, stepper, compute_loss, epoch, steps_per_epoch, args, tb,
                                start_it=skip, partial=partial if skip else None, stop=stop, trace=trace)
            if "stopped_at" in stats:
                trace.close()
                return stop_run(stop, checkpointer, state, epoch, stats["stopped_at"], stats["partial"])
            last = epoch + 1 == args.epochs
            if (epoch + 1) % args.save_ckpt_freq == 0 or last:
                checkpointer.save_epoch(epoch, state(epoch))
            tb.update(head="epoch", step=epoch, **stats)
            tb.flush()
            append_log(args.output_dir, {**{f"train_{k}": v for k, v in stats.items()}, "epoch": epoch,
                                         "n_parameters": n_parameters})
            if not math.isfinite(stats["loss"]):
                raise RunError(f"epoch {epoch}: non-finite mean loss")
            if not last and stop.requested():
                trace.close()
                return stop_run(stop, checkpointer, state, epoch + 1, saved=(epoch + 1) % args.save_ckpt_freq == 0)
    trace.close()
    print(f"training time {datetime.timedelta(seconds=int(time.time() - start))}")
    dist.cleanup()
    return 0


def cli(argv=None):
    args = get_args_parser().parse_args(argv)
    with StopRequest():  # from the start: a stop while setting up is not lost
        return run_entry(main, args)


if __name__ == "__main__":
    sys.exit(cli())
