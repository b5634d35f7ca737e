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
from timm.utils import ModelEmaV3, random_seed

from datasets.build import build_dataset, has_validation_split, multiple_samples_collate
from datasets.registry import DATASETS
from datasets.transforms import FRAME_RESIZES
from engine import distributed as dist
from engine.checkpoint import (BEST, LAST_EPOCH, Checkpointer, args_dict, load_on_all_ranks, provenance, resume,
                               training_state)
from engine.cli import HelpFormatter, UserError, explicit_options, run_entry
from engine.compile import first_step_line
from engine.config import resolve
from engine.device_batch import training_input
from engine.files import write_together
from engine.finetune import classification_loss, evaluate_records, predict
from engine.interrupt import StopDuringEvaluation, StopRequest, current_stop, stop_run, stopped_evaluation
from engine.loader import build_loader, resumable_epochs
from engine.logger import StepTrace, TensorboardLogger, append_log
from engine.optim import LAYER_DECAY_SCHEMES, Schedules, batch_line, build_optimizer
from engine.options import add_common_args, bool_arg
from engine.provenance import checkpoint_record, data_fingerprints, trained_on
from engine.recipes import FINETUNE, parser_defaults
from engine.reports import format_table, write_reports
from engine.runtime import PRECISIONS, grad_scaler, keep_freed_host_memory, wrap_model
from engine.train_step import Stepper, train_epoch
from engine.tuning import add_tuning_args, setup_tuning
from models import MODEL_NAMES, create_model, load_pretrained, read_checkpoint
from models.factory import config_kwargs
from models.from_checkpoint import load_tuned
from models.tuning import is_tuned_checkpoint, load_model_state, parameter_counts

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
    p.add_argument("--layer_decay_scheme", default="release", choices=LAYER_DECAY_SCHEMES,
                   help="release: the temporal downsampling convs and bottleneck modules take the full lr (the "
                        "release's layer ids); stage: they take the decay of their stage's first block")
    p.add_argument("--drop", default=0.0, type=float, help="dropout")
    p.add_argument("--attn_drop_rate", default=0.0, type=float, help="attention dropout")
    p.add_argument("--init_scale", type=float, help="scale of the new classifier's initial weights")
    bool_arg(p, "--use_mean_pooling", True, "mean over tokens then fc_norm (else the first token)")
    p.add_argument("--use_cls", dest="use_mean_pooling", action="store_false", default=argparse.SUPPRESS,
                   help="the release's spelling of --use_mean_pooling False")
    bool_arg(p, "--keep_temporal_dim", False, "one output per frame instead of per clip")
    # augmentation (docs/recipes.md)
    p.add_argument("--aa", type=str, help="timm RandAugment string, the same draw for every frame ('' = none)")
    p.add_argument("--smoothing", type=float, help="label smoothing")
    p.add_argument("--reprob", type=float, help="random erasing probability (one box for all frames)")
    p.add_argument("--remode", default="pixel", type=str, help="random erasing fill: pixel, rand or const")
    p.add_argument("--recount", default=1, type=int, help="random erasing boxes per clip")
    p.add_argument("--num_sample", "--num_samples", dest="num_sample", type=int,
                   help="repeated augmentation: clips per video per step")
    p.add_argument("--short_side_size", default=None, type=int,
                   help="frames are resized to this before any crop (default: --input_size)")
    p.add_argument("--frame_resize", default="square", choices=FRAME_RESIZES,
                   help="square: every frame to short_side x short_side, a squash when it is not square (the "
                        "release's); keep_aspect: the short side to short_side")
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
    p.add_argument("--val_metric", default=None, type=str,
                   help="metric of the validation split (val.csv) that picks checkpoint-best.pth (the dataset's if "
                        "unset); without a val.csv nothing is picked")
    p.add_argument("--val_freq", default=1, type=int,
                   help="validate every this many epochs (on the test split, for monitoring only, without a val.csv)")
    bool_arg(p, "--disable_eval_during_finetuning", False,
             "no validation while training (no best checkpoint): the last epoch's model is tested")
    bool_arg(p, "--test_best", False, "after training, test checkpoint-best.pth (best --val_metric on val.csv; needs "
                                      "a val.csv) instead of the last epoch's model (the release's protocol)")
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


def test(model, args, info, names, device, amp, source=None, prefix="", stop=None):
    """Multi-view test on the test split; writes the reports (``source``: what metrics.json says they
    come from) and prints the table. A ``stop`` ends it with StopDuringEvaluation before anything is
    written."""
    dataset = build_dataset("test", args)
    loader = build_loader(dataset, args, train=False)
    records, feats = predict(model, loader, device, amp, args, header="Test:", with_features=args.save_feature,
                             stop=stop)
    frame, metrics = evaluate_records(records, dataset, info, names, args)
    if dist.is_main_process() and args.output_dir:
        write_reports(args.output_dir, frame, metrics, "regression" if info.task == "regression" else "cls", names,
                      prefix, provenance={**(source or {}), "args": args_dict(args)})
        if args.save_feature:
            keys = sorted(feats)
            index = "row,path,view\n" + "".join(f"{i},{dataset.samples[v].path},{w}\n" for i, (v, w) in enumerate(keys))
            write_together([(os.path.join(args.output_dir, f"{prefix}features.npy"),
                             lambda f: np.save(f, np.stack([feats[k] for k in keys]))),
                            (os.path.join(args.output_dir, f"{prefix}features_index.csv"),
                             lambda f: f.write(index.encode("utf-8")))])
    print(format_table(metrics, info.task, f"== {info.name} test ({len(frame)} videos, "
                                           f"{args.test_num_segment}x{args.test_num_crop} views) =="))
    return metrics


def main(args, given=frozenset()):
    """``given``: the options typed on the command line (they must agree with an evaluated checkpoint)."""
    stop = current_stop()
    info, checkpoint = resolve(args, "finetune", given)
    data = data_fingerprints(args, "finetune")
    device = torch.device(args.device)
    if device.type == "cpu":
        keep_freed_host_memory()
    random_seed(args.seed, dist.get_rank())
    amp = PRECISIONS[args.amp]
    names = list(info.classes or info.targets)
    print(f"args: {json.dumps(vars(args), default=str)}")

    if checkpoint is None and args.finetune:
        checkpoint = read_checkpoint(args.finetune)
    model = build_model(args, info, checkpoint).to(device)
    tested = ({**provenance(args.finetune or args.resume, checkpoint),
               **checkpoint_record(args.finetune or args.resume, checkpoint), "data": {"test": data["test"]}}
              if args.eval else None)
    del checkpoint
    if args.eval:
        try:
            test(model, args, info, names, device, amp, tested, stop=stop)
        except StopDuringEvaluation:
            return stopped_evaluation(stop, "the test")
        dist.cleanup()
        return 0

    # Selection needs a validation split: without one, the test split is scored during training
    # for monitoring (logged as test_*) and the last epoch's model is what gets tested.
    validate = not args.disable_eval_during_finetuning
    selecting = validate and has_validation_split(args.data_path)
    if args.test_best and not selecting:
        why = ("--disable_eval_during_finetuning validates nothing" if not validate else
               f"{args.data_path} has no val.csv: testing the best epoch on the test split would select on it "
               f"(python -m datasets.holdout makes a val.csv out of train.csv)")
        raise UserError(f"--test_best needs a validation split, and {why}")
    monitor = "val" if selecting else "test"
    selection = f"best val {args.val_metric} on val.csv"
    train_set = build_dataset("train", args)
    val_set = build_dataset(monitor, args, mode="validation") if validate else []
    collate = multiple_samples_collate if args.num_sample > 1 else None
    train_loader = build_loader(train_set, args, train=True, collate_fn=collate)
    val_loader = build_loader(val_set, args, train=False) if validate else None
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
    print(f"{len(train_set)} train / {len(val_set)} {monitor} clips, {steps_per_epoch} steps/epoch, "
          f"{batch_line(args)}")

    model_ddp = wrap_model(model, args, device)
    optimizer = build_optimizer(args, model)
    scaler = grad_scaler(device, amp)
    schedules = Schedules(args, optimizer, steps_per_epoch)
    model_ema = ModelEmaV3(model, decay=args.model_ema_decay) if args.model_ema else None
    checkpointer = Checkpointer(args.output_dir, args.keep_last, save=args.save_ckpt)
    checkpointer.remove_stale_temps()
    start_epoch, start_it, resumed = resume(args, checkpointer, model, optimizer, scaler, model_ema,
                                            data=trained_on(data))
    start_epoch = max(args.start_epoch, start_epoch)
    best_score = (resumed or {}).get("best")
    best_epoch = (resumed or {}).get("best_epoch")
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
        return training_state(model, optimizer, scaler, model_ema, args, epoch, best=best_score, best_epoch=best_epoch,
                              data=trained_on(data),
                              **extra)

    n_parameters = parameter_counts(model)[0]  # trained ones, as mae and VideoMAE log them
    if not validate:
        plan = "no validation: the last epoch is tested"
    elif selecting:
        plan = f"{BEST} by {args.val_metric} on val.csv; testing " + (BEST if args.test_best else "the last epoch")
    else:
        plan = (f"no val.csv: nothing is selected, the last epoch is tested; test {args.val_metric} is printed "
                f"during training for monitoring only")
    print(f"start training for {args.epochs} epochs from epoch {start_epoch}; {plan}")
    start = time.time()
    with StopRequest() as stop:
        for epoch, skip in resumable_epochs(train_loader, start_epoch, start_it, args.epochs):
            stats = train_epoch(model_ddp, train_loader, stepper, compute_loss, epoch, steps_per_epoch, args, tb,
                                start_it=skip, partial=partial if skip else None, stop=stop, trace=trace)
            if "stopped_at" in stats:
                trace.close()
                return stop_run(stop, checkpointer, state, epoch, stats["stopped_at"], stats["partial"])
            record = {**{f"train_{k}": v for k, v in stats.items()}, "epoch": epoch, "n_parameters": n_parameters}
            last = epoch + 1 == args.epochs
            if validate and ((epoch + 1) % args.val_freq == 0 or last):
                try:
                    records, _ = predict(eval_model(), val_loader, device, amp, args, header=f"{monitor.title()}:",
                                         stop=stop)
                except StopDuringEvaluation:  # the rerun validates this epoch again, then goes on
                    trace.close()
                    return stop_run(stop, checkpointer, state, epoch, steps_per_epoch * args.update_freq,
                                    {"loss_sum": stats["loss"], "count": 1})
                _, val_metrics = evaluate_records(records, val_set, info, names, args)
                score = val_metrics[args.val_metric]
                if selecting:
                    if best_score is None or (score < best_score if args.val_metric == "mse" else score > best_score):
                        best_score, best_epoch = score, epoch
                        checkpointer.save(BEST, training_state(eval_model(), args=args, epoch=epoch, best=score,
                                                               selection=selection, data=trained_on(data)))
                    print(f"epoch {epoch}: val {args.val_metric} {score:.4f} "
                          f"(best {best_score:.4f}, epoch {best_epoch})")
                else:
                    print(f"epoch {epoch}: test {args.val_metric} {score:.4f} (monitoring: not used to select)")
                numbers = {k: v for k, v in val_metrics.items() if isinstance(v, (int, float))}
                record.update({f"{monitor}_{k}": v for k, v in numbers.items()})
                tb.update(head=monitor, step=epoch, **numbers)
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

    # The best checkpoint of this run, when it writes one (not with --no_save_ckpt or without a val.csv).
    best = os.path.join(args.output_dir, BEST) if args.output_dir and args.save_ckpt and selecting else ""
    if args.test_best and best and dist.from_rank0(lambda: os.path.exists(best)):
        best_state = load_on_all_ranks(best)
        load_model_state(model, best_state["model"])
        tested = {**checkpoint_record(best, best_state), "epoch": best_epoch, "selection": selection}
        del best_state
        print(f"testing {BEST} (val {args.val_metric} {best_score:.4f}, epoch {best_epoch})")
    else:
        last = os.path.join(args.output_dir, f"checkpoint-{args.epochs - 1}.pth") if args.output_dir else ""
        print("testing the last epoch's model" + (f" ({os.path.basename(last)})" if last and args.save_ckpt else ""))
        tested = {"checkpoint": os.path.abspath(last) if last and args.save_ckpt else None,
                  **(checkpoint_record(last) if last and args.save_ckpt else {}),
                  "epoch": args.epochs - 1, "selection": LAST_EPOCH}
    tested["data"] = {"test": data["test"]}
    try:
        test(model, args, info, names, device, amp, tested, stop=stop)
    except StopDuringEvaluation:
        return stopped_evaluation(stop, "the final test (the training is complete: the rerun only tests)")
    dist.cleanup()
    return 0


def cli(argv=None):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    with StopRequest():  # from the start: a stop while setting up or testing is not lost
        return run_entry(main, args, explicit_options(parser, argv))


if __name__ == "__main__":
    sys.exit(cli())
