"""One optimisation step shared by both loops: accumulation, AMP, clipping, non-finite checks."""
from contextlib import nullcontext

import torch

from .cli import RunError
from .distributed import all_reduce_mean, any_rank
from .logger import MetricLogger


class NonFiniteLossError(RunError):
    """A NaN or infinite loss: the run stops (exit status 1)."""


class Stepper:
    """Backward + (every ``update_freq`` micro-batches) clip, optimizer step, EMA update.

    The first non-finite loss is recorded on the device (no per-step host sync) and reported at
    the next logging point, naming the step, the lr and the loss scale.
    """

    def __init__(self, model, optimizer, schedules, scaler, args, model_ema=None):
        self.model, self.optimizer, self.schedules = model, optimizer, schedules
        self.scaler, self.model_ema = scaler, model_ema
        self.update_freq = max(1, args.update_freq)
        self.clip_grad = args.clip_grad
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.bad_step = None
        self.bad_lr = None
        self.after_first_step = None  # called once, after the first call (a compiled run's report)

    def is_boundary(self, it):
        return (it + 1) % self.update_freq == 0

    def sync_context(self, it):
        # Skip DDP's gradient all-reduce on micro-batches that only accumulate.
        if hasattr(self.model, "no_sync") and not self.is_boundary(it):
            return self.model.no_sync()
        return nullcontext()

    def __call__(self, loss, it, global_step, want_norm=False):
        """Backward on ``loss``; returns the grad norm tensor on optimizer steps (else None)."""
        finite = torch.isfinite(loss.detach())
        if self.bad_step is None:
            self.bad_step = torch.full_like(finite, False, dtype=torch.long) - 1
        self.bad_step = torch.where((self.bad_step < 0) & ~finite, torch.full_like(self.bad_step, global_step),
                                    self.bad_step)
        with self.sync_context(it):
            scaled = loss / self.update_freq
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        if not self.is_boundary(it):
            return self._first_done(None)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = None
        if self.clip_grad:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad)
        elif want_norm:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.model_ema is not None:
            self.model_ema.update(self.model, step=global_step)
        return self._first_done(norm)

    def _first_done(self, result):
        if self.after_first_step is not None:
            self.after_first_step()
            self.after_first_step = None
        return result

    def start(self, it, epoch, steps_per_epoch):
        """Global optimisation step of micro-batch ``it``; the schedules move at each new step."""
        global_step = epoch * steps_per_epoch + it // self.update_freq
        if it % self.update_freq == 0:
            self.schedules.step(global_step)
        return global_step

    def log(self, logger, tb, loss, norm, global_step):
        self.check_finite()
        lr, wd = self.schedules.current()
        logger.update(loss=loss, lr=lr, weight_decay=wd, grad_norm=norm)
        if tb is not None:
            tb.update(head="loss", step=global_step, loss=loss)
            tb.update(head="opt", step=global_step, lr=lr, weight_decay=wd, grad_norm=norm)

    def epoch_stats(self, loss_sum, count):
        """Mean loss over the epoch and all processes, with the lr and weight decay reached."""
        self.check_finite()
        lr, wd = self.schedules.current()
        return {"loss": all_reduce_mean((loss_sum / max(count, 1)).item()), "lr": lr, "weight_decay": wd}

    def check_finite(self):
        """Raise if any loss so far was NaN or inf, on every rank at once (called at logging points: one
        host sync)."""
        if any_rank(self.bad_step is not None and int(self.bad_step) >= 0):
            lr, _ = self.schedules.current()
            scale = self.scaler.get_scale() if self.scaler is not None else None
            step = int(self.bad_step) if self.bad_step is not None and int(self.bad_step) >= 0 else "?"
            raise NonFiniteLossError(
                f"non-finite loss at optimisation step {step} (lr {lr:.3e}, loss scale {scale}); "
                f"stopping. Lower --lr, use --clip_grad, or try --amp bf16/none.")


def train_epoch(model, loader, stepper, compute_loss, epoch, steps_per_epoch, args, tb=None, start_it=0,
                partial=None, stop=None, trace=None):
    """One training epoch from micro-batch ``start_it``: ``compute_loss(batch)`` gives the loss.

    Returns the epoch's stats, or, when ``stop`` is requested at an optimisation-step boundary,
    ``{"stopped_at": micro-batches done, "partial": running loss sums}`` for a resumable checkpoint.
    ``partial`` carries the running sums of a resumed epoch.
    """
    model.train()
    logger = MetricLogger()
    device = stepper.params[0].device if stepper.params else torch.device("cpu")
    loss_sum = torch.zeros((), device=device) + (partial or {}).get("loss_sum", 0.0)
    count = (partial or {}).get("count", 0)
    iterator = logger.log_every(loader, args.print_freq, f"Epoch: [{epoch}]", start=start_it,
                                samples_per_iter=args.batch_size * args.clips_per_video * args.world_size)
    for it, batch, should_log in iterator:
        if it // stepper.update_freq >= steps_per_epoch:
            break
        global_step = stepper.start(it, epoch, steps_per_epoch)
        loss = compute_loss(batch)
        norm = stepper(loss, it, global_step, want_norm=should_log)
        loss_sum += loss.detach()
        count += 1
        if trace is not None:
            trace.write(epoch=epoch, iteration=it, step=global_step, lr=stepper.schedules.current()[0],
                        samples=batch[-1].tolist())
        if should_log:
            stepper.log(logger, tb, loss, norm, global_step)
        last = it + 1 >= steps_per_epoch * stepper.update_freq  # the epoch's end has its own stop check
        if stop is not None and stepper.is_boundary(it) and not last and stop.requested():
            iterator.close()
            return {"stopped_at": it + 1, "partial": {"loss_sum": float(loss_sum), "count": count}}
    return stepper.epoch_stats(loss_sum, count)

