"""SVFAP masked video pre-training (single process, or torchrun / SLURM for several)."""
import argparse
import datetime
import json
import math
import sys
import time

import timm
import torch

import models  # noqa: F401  (registers the models)
from datasets.build import build_pretraining_dataset, multiple_samples_collate
from engine import distributed as dist
from engine.checkpoint import LATEST, Checkpointer, resume, training_state
from engine.cli import RunError, UserError, run_entry
from engine.common import add_common_args, amp_dtype, bool_arg, build_loader, check_args, grad_scaler, \
    keep_freed_host_memory, prepare_output, seed_everything, wrap_model
from engine.interrupt import StopRequest, stopped
from engine.logger import StepTrace, TensorboardLogger, append_log
from engine.optim import Schedules, build_optimizer, effective_batch_size, scale_lr
from engine.pretrain import reconstruction_loss
from engine.train_step import Stepper, train_epoch


def get_args_parser():
    p = argparse.ArgumentParser("SVFAP pre-training", add_help=True)
    add_common_args(p)
    p.set_defaults(lr=3e-4, min_lr=1e-5, warmup_epochs=5, drop_path=0.0, opt_betas=[0.9, 0.95], epochs=100,
                   sampling_rate=4, save_ckpt_freq=20)
    p.add_argument("--model", default="pretrain_svfap_base_patch16_160", type=str)
    p.add_argument("--decoder_depth", default=None, type=int, help="model default (4 for base and small)")
    p.add_argument("--mask_type", default="tube", choices=["tube"])
    p.add_argument("--mask_ratio", default=0.9, type=float)
    bool_arg(p, "--normlize_target", True, "per-tubelet normalised pixel targets")
    bool_arg(p, "--face_crop", False, "fixed upper-centre 160x160 crop of 224x224 face tracks (VoxCeleb2)")
    p.add_argument("--num_samples", default=1, type=int, help="clips sampled per decoded video")
    p.add_argument("--data_set", default="VOXCELEB2", type=str)
    return p


def main(args):
    check_args(args)
    dist.init_distributed_mode(args)
    prepare_output(args)
    device = torch.device(args.device)
    if device.type == "cpu":
        keep_freed_host_memory()
    seed_everything(args.seed, dist.get_rank())
    amp = amp_dtype(args)
    print(f"args: {json.dumps(vars(args), default=str)}")

    model = timm.create_model(args.model, img_size=args.input_size, num_frames=args.num_frames,
                              tubelet_size=args.tubelet_size, decoder_depth=args.decoder_depth,
                              drop_path_rate=args.drop_path, stage_depths=args.stage_depths,
                              num_bottleneck_tokens=args.num_bottleneck_tokens,
                              temporal_kernel_size=args.temporal_kernel_size)
    args.patch_size = model.patch_size
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    model.to(device)
    print(f"model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")

    dataset = build_pretraining_dataset(args)
    collate = multiple_samples_collate if args.num_samples > 1 else None
    loader = build_loader(dataset, args, train=True, collate_fn=collate)
    steps_per_epoch = len(loader) // args.update_freq
    if steps_per_epoch == 0:
        raise UserError(f"{len(dataset)} clips give no full batch of {args.batch_size} x {args.world_size} "
                        f"processes; lower --batch_size")
    factor = scale_lr(args)
    print(f"{len(dataset)} clips, {steps_per_epoch} steps/epoch, effective batch {effective_batch_size(args)}, "
          f"lr {args.lr:.3e} (base {args.base_lr:.1e} x {factor:.3f})")

    model_ddp = wrap_model(model, args, device)
    optimizer = build_optimizer(args, model)
    scaler = grad_scaler(device, amp)
    schedules = Schedules(args, optimizer, steps_per_epoch)
    checkpointer = Checkpointer(args.output_dir, args.keep_last)
    checkpointer.remove_stale_temps()
    start_epoch, start_it, resumed = resume(args, checkpointer, model, optimizer, scaler)
    start_epoch = max(args.start_epoch, start_epoch)
    partial = (resumed or {}).get("partial")
    del resumed
    stepper = Stepper(model_ddp, optimizer, schedules, scaler, args)
    compute_loss = reconstruction_loss(model_ddp, device, amp, args.normlize_target)
    tb = TensorboardLogger(args.log_dir)
    trace = StepTrace(args.trace_steps)

    def state(epoch, **extra):
        return training_state(model, optimizer, scaler, None, args, epoch, **extra)

    print(f"start training for {args.epochs} epochs from epoch {start_epoch}")
    start = time.time()
    with StopRequest() as stop:
        for epoch in range(start_epoch, args.epochs):
            skip = start_it if epoch == start_epoch else 0
            loader.sampler.set_epoch(epoch, skip=skip * args.batch_size)
            stats = train_epoch(model_ddp, loader, stepper, compute_loss, epoch, steps_per_epoch, args, tb,
                                start_it=skip, partial=partial if skip else None, stop=stop, trace=trace)
            if "stopped_at" in stats:
                checkpointer.save(LATEST, state(epoch - 1, resume={"epoch": epoch, "iteration": stats["stopped_at"]},
                                                partial=stats["partial"]))
                trace.close()
                return stopped(stop, checkpointer, epoch, stats["stopped_at"])
            last = epoch + 1 == args.epochs
            if (epoch + 1) % args.save_ckpt_freq == 0 or last:
                checkpointer.save_epoch(epoch, state(epoch))
            tb.update(head="epoch", step=epoch, **stats)
            tb.flush()
            append_log(args.output_dir, {**{f"train_{k}": v for k, v in stats.items()}, "epoch": epoch})
            if not math.isfinite(stats["loss"]):
                raise RunError(f"epoch {epoch}: non-finite mean loss")
            if not last and stop.requested():
                if (epoch + 1) % args.save_ckpt_freq:
                    checkpointer.save(LATEST, state(epoch, resume={"epoch": epoch + 1, "iteration": 0}))
                trace.close()
                return stopped(stop, checkpointer, epoch + 1, 0)
    trace.close()
    print(f"training time {datetime.timedelta(seconds=int(time.time() - start))}")
    dist.cleanup()
    return 0


def cli(argv=None):
    return run_entry(main, get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
