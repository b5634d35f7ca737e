"""SVFAP fine-tuning and multi-view evaluation on any registered dataset (or a custom CSV)."""
import argparse
import datetime
import json
import os
import sys
import time

import numpy as np
import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils import ModelEmaV3

from datasets.build import build_dataset, multiple_samples_collate
from datasets.registry import DATASETS
from engine import distributed as dist
from engine.checkpoint import BEST, Checkpointer, load_on_all_ranks, resume, training_state
from engine.cli import HelpFormatter, UserError, explicit_options, run_entry
from engine.compile import first_step_line
from engine.config import resolve
from engine.device_batch import training_input
from engine.finetune import classification_loss, evaluate_records, predict
from engine.interrupt import StopRequest, stop_run
from engine.loader import build_loader, resumable_epochs
from engine.logger import StepTrace, TensorboardLogger, append_log
from engine.optim import Schedules, batch_line, build_optimizer
from engine.options import add_common_args, bool_arg
from engine.recipes import FINETUNE, parser_defaults
from engine.reports import format_table, write_reports
from engine.runtime import PRECISIONS, grad_scaler, keep_freed_host_memory, seed_everything, wrap_model
from engine.train_step import Stepper, train_epoch
from engine.tuning import add_tuning_args, setup_tuning
from models import MODEL_NAMES, create_model, load_pretrained
from models.checkpoint import read_checkpoint
from models.factory import config_kwargs
from models.tuning import is_tuned_checkpoint, load_model_state, load_tuned

TASKS = ("classification", "regression", "clip_classification")


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_common_args(p)
    p.add_argument("--model", default="svfap_base_patch16_160", metavar="NAME",
                   help=f"registered model: {', '.join(n for n in MODEL_NAMES if not n.startswith('pretrain_'))}")
    p.add_argument("--data_set", default="DFEW", metavar="NAME",
                   help=f"registered dataset ({', '.join(d for d in DATASETS if d != 'VOXCELEB2')}) or custom")
    p.add_argument("--nb_classes", default=None, type=int, help="classes (or targets); the dataset's if unset")
    p.add_argument("--task", default=None, choices=TASKS, help="only for --data_set custom")
    p.add_argument("--class_names", default=None,
                   help="names of the classes (or targets): comma-separated, or a file with one a line; default: "
                        "the registry's, or a classes.txt beside a custom dataset's CSVs")
    p.add_argument("--video_id_regex", default=r"^(.*)/[^/]+$",
                   help="clip-averaged tasks: first group of this regex on a clip path names its video")
    p.add_argument("--layer_decay", type=float, help="layer-wise lr decay (1 = none)")
    p.add_argument("--drop", default=0.0, type=float, help="dropout")
    p.add_argument("--attn_drop_rate", default=0.0, type=float, help="attention dropout")
    p.add_argument("--init_scale", type=float, help="scale of the new classifier's initial weights")
    bool_arg(p, "--use_mean_pooling", True, "mean over tokens then fc_norm (else the first token)")
    bool_arg(p, "--keep_temporal_dim", False, "one output per frame instead of per clip")
    # augmentation (docs/recipes.md)
    p.add_argument("--aa", type=str, help="timm RandAugment string, the same draw for every frame ('' = none)")
    p.add_argument("--smoothing", type=float, help="label smoothing")
    p.add_argument("--reprob", type=float, help="random erasing probability (one box for all frames)")
    p.add_argument("--remode", default="pixel", type=str, help="random erasing fill: pixel, rand or const")
    p.add_argument("--recount", default=1, type=int, help="random erasing boxes per clip")
    p.add_argument("--num_sample", type=int, help="repeated augmentation: clips per video per step")
    p.add_argument("--short_side_size", default=None, type=int, help="resize before the test crop (default: input)")
    p.add_argument("--train_crop_scale", default=[0.08, 1.0], type=float, nargs=2,
                   help="area range of the random resized crop")
    p.add_argument("--mixup", type=float, help="mixup alpha (0 = off)")
    p.add_argument("--cutmix", type=float, help="cutmix alpha (0 = off)")
    p.add_argument("--cutmix_minmax", default=None, type=float, nargs="+", help="cutmix box ratio range")
    p.add_argument("--mixup_prob", type=float, help="probability of mixing a batch")
    p.add_argument("--mixup_switch_prob", type=float, help="probability of cutmix instead of mixup")
    p.add_argument("--mixup_mode", type=str, help="batch, pair or elem")
    # evaluation
    p.add_argument("--finetune", default="",
                   help="pre-trained (or fine-tuned) checkpoint to start from: a file (the release's, this "
                        "project's, VideoMAE's) or a transformers VideoMAE save_pretrained folder")
    p.add_argument("--model_key", default="model|module|state_dict", type=str,
                   help="where the weights sit in the checkpoint dict (first found)")
    bool_arg(p, "--eval", False, "only evaluate (multi-view) the --finetune/--resume checkpoint on the test split; "
                                 "the model and clip settings come from the checkpoint")
    bool_arg(p, "--force_config", False, "with --eval: let command-line model/clip options override the "
                                         "checkpoint's (by default a conflict is an error)")
    bool_arg(p, "--dist_eval", True, "shard evaluation over processes (metrics are still computed globally)")
    p.add_argument("--test_num_segment", type=int, help="temporal clips per test video")
    p.add_argument("--test_num_crop", type=int, help="spatial crops per test clip")
    p.add_argument("--val_metric", default=None, type=str, help="picks the best checkpoint (the dataset's if unset)")
    p.add_argument("--val_freq", default=1, type=int, help="validate every this many epochs")
    bool_arg(p, "--save_feature", False, "also save pooled test features (features.npy + features_index.csv)")
    bool_arg(p, "--model_ema", False, "keep an exponential moving average of the weights")
    p.add_argument("--model_ema_decay", default=0.9999, type=float, help="EMA decay per step")
    bool_arg(p, "--model_ema_eval", False, "evaluate with the EMA weights")
    add_tuning_args(p)
    p.set_defaults(batch_size=16, save_ckpt_freq=20, **parser_defaults(FINETUNE))
    return p


def build_model(args, info, checkpoint=None):
    model = create_model(args.model, num_classes=info.num_outputs, drop_rate=args.drop,
                         attn_drop_rate=args.attn_drop_rate, drop_path_rate=args.drop_path,
                         init_scale=args.init_scale, **config_kwargs(vars(args)))
    if checkpoint is not None and args.eval and is_tuned_checkpoint(checkpoint):
        print(f"loading {args.finetune or args.resume} ({checkpoint['tuning']['mode']}) over its backbone")
        load_tuned(model, checkpoint, args.backbone, verbose=True)
    elif checkpoint is not None:
        print(f"loading {args.finetune or args.resume}")
        report = load_pretrained(model, checkpoint, model_key=args.model_key)
        if args.eval and report["new_head"]:
            raise UserError(f"the classifier of {args.finetune or args.resume} does not fit or is absent "
                            f"({'; '.join(report['new_head'])}): --eval needs a fine-tuned checkpoint with as many "
                            f"outputs as --data_set / --nb_classes ask for")
    if not args.eval:
        setup_tuning(model, args)
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def criterion_for(args, info, mixup_fn):
    if info.task == "regression":
        return torch.nn.MSELoss()
    if mixup_fn is not None:
        return SoftTargetCrossEntropy()  # the smoothing is in mixup's soft targets
    if args.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    return torch.nn.CrossEntropyLoss()


def test(model, args, info, names, device, amp, prefix=""):
    """Multi-view test on the test split; writes the reports and prints the table."""
    dataset = build_dataset("test", args)
    loader = build_loader(dataset, args, train=False)
    records, feats = predict(model, loader, device, amp, args, header="Test:", with_features=args.save_feature)
    frame, metrics = evaluate_records(records, dataset, info, names, args)
    if dist.is_main_process() and args.output_dir:
        write_reports(args.output_dir, frame, metrics, "regression" if info.task == "regression" else "cls", names,
                      prefix)
        if args.save_feature:
            keys = sorted(feats)
            np.save(os.path.join(args.output_dir, f"{prefix}features.npy"), np.stack([feats[k] for k in keys]))
            with open(os.path.join(args.output_dir, f"{prefix}features_index.csv"), "w") as f:
                f.write("row,path,view\n")
                f.writelines(f"{i},{dataset.samples[v].path},{w}\n" for i, (v, w) in enumerate(keys))
    print(format_table(metrics, info.task, f"== {info.name} test ({len(frame)} videos, "
                                           f"{args.test_num_segment}x{args.test_num_crop} views) =="))
    return metrics


def main(args, given=frozenset()):
    """``given``: the options typed on the command line (they must agree with an evaluated checkpoint)."""
    info, checkpoint = resolve(args, "finetune", given)
    device = torch.device(args.device)
    if device.type == "cpu":
        keep_freed_host_memory()
    seed_everything(args.seed, dist.get_rank())
    amp = PRECISIONS[args.amp]
    names = list(info.classes or info.targets)
    print(f"args: {json.dumps(vars(args), default=str)}")

    if checkpoint is None and args.finetune:
        checkpoint = read_checkpoint(args.finetune)
    model = build_model(args, info, checkpoint).to(device)
    del checkpoint
    if args.eval:
        test(model, args, info, names, device, amp)
        dist.cleanup()
        return 0

    train_set = build_dataset("train", args)
    val_set = build_dataset("val", args)
    collate = multiple_samples_collate if args.num_sample > 1 else None
    train_loader = build_loader(train_set, args, train=True, collate_fn=collate)
    val_loader = build_loader(val_set, args, train=False)
    steps_per_epoch = len(train_loader) // args.update_freq
    if steps_per_epoch == 0:
        raise UserError(f"{len(train_set)} training clips give no full batch; lower --batch_size")

    mixup_fn = None
    if info.task != "regression" and (args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax):
        if (args.batch_size * args.num_sample) % 2:
            raise UserError("mixup/cutmix pairs clips within a batch: use an even --batch_size (or --mixup 0 --cutmix 0)")
        mixup_fn = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                         prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                         label_smoothing=args.smoothing, num_classes=info.num_outputs)
    criterion = criterion_for(args, info, mixup_fn)
    print(f"{len(train_set)} train / {len(val_set)} val clips, {steps_per_epoch} steps/epoch, "
          f"{batch_line(args)}")

    model_ddp = wrap_model(model, args, device)
    optimizer = build_optimizer(args, model)
    scaler = grad_scaler(device, amp)
    schedules = Schedules(args, optimizer, steps_per_epoch)
    model_ema = ModelEmaV3(model, decay=args.model_ema_decay) if args.model_ema else None
    checkpointer = Checkpointer(args.output_dir, args.keep_last)
    checkpointer.remove_stale_temps()
    start_epoch, start_it, resumed = resume(args, checkpointer, model, optimizer, scaler, model_ema)
    start_epoch = max(args.start_epoch, start_epoch)
    best_score = (resumed or {}).get("best")
    partial = (resumed or {}).get("partial")
    del resumed
    stepper = Stepper(model_ddp, optimizer, schedules, scaler, args, model_ema)
    if args.compile:
        stepper.after_first_step = lambda: print(first_step_line())
    compute_loss = classification_loss(model_ddp, criterion, device, amp, mixup_fn, training_input(args, device))
    tb = TensorboardLogger(args.log_dir)
    trace = StepTrace(args.trace_steps)

    def eval_model():
        return model_ema.module if (model_ema is not None and args.model_ema_eval) else model

    def state(epoch, **extra):
        return training_state(model, optimizer, scaler, model_ema, args, epoch, best=best_score, **extra)

    print(f"start training for {args.epochs} epochs from epoch {start_epoch}; best checkpoint by {args.val_metric}")
    start = time.time()
    with StopRequest() as stop:
        for epoch, skip in resumable_epochs(train_loader, start_epoch, start_it, args.epochs):
            stats = train_epoch(model_ddp, train_loader, stepper, compute_loss, epoch, steps_per_epoch, args, tb,
                                start_it=skip, partial=partial if skip else None, stop=stop, trace=trace)
            if "stopped_at" in stats:
                trace.close()
                return stop_run(stop, checkpointer, state, epoch, stats["stopped_at"], stats["partial"])
            record = {**{f"train_{k}": v for k, v in stats.items()}, "epoch": epoch}
            last = epoch + 1 == args.epochs
            if (epoch + 1) % args.val_freq == 0 or last:
                records, _ = predict(eval_model(), val_loader, device, amp, args, header="Val:")
                _, val_metrics = evaluate_records(records, val_set, info, names, args)
                score = val_metrics[args.val_metric]
                better = best_score is None or (score < best_score if args.val_metric == "mse" else score > best_score)
                if better:
                    best_score = score
                    checkpointer.save(BEST, training_state(eval_model(), args=args, epoch=epoch, best=score))
                print(f"epoch {epoch}: val {args.val_metric} {score:.4f} (best {best_score:.4f})")
                numbers = {k: v for k, v in val_metrics.items() if isinstance(v, (int, float))}
                record.update({f"val_{k}": v for k, v in numbers.items()})
                tb.update(head="val", step=epoch, **numbers)
            if (epoch + 1) % args.save_ckpt_freq == 0 or last:
                checkpointer.save_epoch(epoch, state(epoch))
            tb.update(head="epoch", step=epoch, **stats)
            tb.flush()
            append_log(args.output_dir, record)
            if not last and stop.requested():
                trace.close()
                return stop_run(stop, checkpointer, state, epoch + 1, saved=(epoch + 1) % args.save_ckpt_freq == 0)
    trace.close()
    print(f"training time {datetime.timedelta(seconds=int(time.time() - start))}")

    best = os.path.join(args.output_dir, BEST) if args.output_dir else ""
    if best and dist.from_rank0(lambda: os.path.exists(best)):
        load_model_state(model, load_on_all_ranks(best)["model"])
        print(f"testing the best checkpoint ({args.val_metric} {best_score:.4f})")
    test(model, args, info, names, device, amp)
    dist.cleanup()
    return 0


def cli(argv=None):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    return run_entry(main, args, explicit_options(parser, argv))


if __name__ == "__main__":
    sys.exit(cli())
