"""A small trainer (classification, segmentation): epochs, evaluation, checkpoints, resume, DDP."""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .._checks import check_callable
from .checkpoint import (
    atomic_write_json,
    capture_rng_state,
    load_checkpoint,
    plain,
    remove_stale_temp_files,
    restore_rng_state,
    save_checkpoint,
)
from .distributed import (
    DistInfo,
    ResumableBatchSampler,
    ShardedEvalSampler,
    all_gather_objects,
    all_reduce_sum,
    any_across_ranks,
    barrier,
)
from .interrupt import GracefulInterrupt
from .metrics import ClassificationMetrics, ConfusionMatrix, SegmentationMetrics, format_class_table

__all__ = ["Trainer", "make_loader", "default_forward", "unwrap_model", "evaluate_model"]

CHECKPOINT_VERSION = 1


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper (or itself)."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


def default_forward(model: nn.Module, batch, device: torch.device):
    """``batch = (inputs, target)`` -> ``(logits, target, batch_size)`` on ``device``."""
    inputs, target = batch
    non_blocking = device.type == "cuda"
    if hasattr(inputs, "to"):
        inputs = inputs.to(device, non_blocking=non_blocking)
    target = target.to(device, non_blocking=non_blocking)
    return model(inputs), target, int(target.shape[0])


@torch.no_grad()
def evaluate_model(model: nn.Module, loader, num_classes: int, device: torch.device | str = "cpu",
                   forward: Callable = default_forward, progress: bool = False,
                   desc: str = "evaluate") -> ClassificationMetrics:
    """OA / mAcc / per-class accuracy of ``model`` (in eval mode) over one pass of ``loader``.

    Args:
        model: a classifier (put in eval mode here).
        loader: batches that ``forward`` understands (default ``(inputs, target)``).
        num_classes: K.
        device: where the batches go.
        forward: ``forward(model, batch, device) -> (logits, target, batch_size)``.
        progress: show a tqdm bar.
        desc: the bar's label.
    """
    device = torch.device(device)
    model.eval()
    confusion = ConfusionMatrix(num_classes, device)
    for batch in tqdm(loader, disable=not progress, desc=desc, dynamic_ncols=True, leave=False):
        logits, target, _ = forward(model, batch, device)
        confusion.update(logits, target)
    return confusion.compute()


def make_loader(dataset, *, batch_size: int, train: bool, dist_info: DistInfo, seed: int = 0,
                workers: int = 0, drop_last: bool = True, collate_fn: Callable | None = None
                ) -> DataLoader:
    """A DataLoader for :class:`Trainer`, with its own generator.

    Args:
        dataset: map-style dataset.
        batch_size: batch size per process.
        train: shuffled :class:`ResumableBatchSampler` (``True``) or :class:`ShardedEvalSampler`.
        dist_info: this process's place in the group.
        seed: seed of the shuffling (and of the loader's generator).
        workers: DataLoader worker processes (non-persistent: ``set_epoch`` reaches them).
        drop_last: drop the last incomplete training batch (PointMLP does).
        collate_fn: batch collation (default: stack).
    """
    gen = torch.Generator()
    gen.manual_seed(int(seed) + (0 if train else 1))
    common = dict(num_workers=workers, worker_init_fn=_ignore_sigint if workers > 0 else None,
                  pin_memory=dist_info.device.type == "cuda", generator=gen,
                  collate_fn=collate_fn, persistent_workers=False)
    if train:
        sampler = ResumableBatchSampler(len(dataset), batch_size, shuffle=True, seed=seed,
                                        rank=dist_info.rank, world_size=dist_info.world_size,
                                        drop_last=drop_last)
        return DataLoader(dataset, batch_sampler=sampler, **common)
    sampler = ShardedEvalSampler(len(dataset), dist_info.rank, dist_info.world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, **common)


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which stops cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _EpochCounters:
    """Loss sum, sample count and confusion matrix of one pass (one rank)."""

    def __init__(self, num_classes: int, device, confusion: Callable = ConfusionMatrix) -> None:
        self.loss_sum, self.count = 0.0, 0
        self.confusion = confusion(num_classes, device)

    def update(self, loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, n: int):
        self.loss_sum += float(loss.detach()) * n
        self.count += n
        self.confusion.update(logits.detach(), target)

    def running(self) -> tuple[float, float]:
        m = self.confusion.matrix
        total = max(int(m.sum()), 1)
        return self.loss_sum / max(self.count, 1), float(m.diag().sum()) / total

    def state_dict(self) -> dict:
        return {"loss_sum": self.loss_sum, "count": self.count, **self.confusion.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.loss_sum, self.count = float(state["loss_sum"]), int(state["count"])
        self.confusion.load_state_dict(state)

    def reduce(self, device) -> tuple[float, ClassificationMetrics, int]:
        """Sum over ranks; returns (mean loss, metrics, number of samples)."""
        t = torch.tensor([self.loss_sum, float(self.count)], dtype=torch.float64, device=device)
        all_reduce_sum(t)
        self.confusion.all_reduce()
        return float(t[0] / t[1].clamp(min=1)), self.confusion.compute(), int(t[1])


class Trainer:
    """Train and evaluate a classifier for a number of epochs, with checkpoints and exact resume.

    Args:
        model: the model (possibly wrapped in ``DistributedDataParallel``), on ``dist_info.device``.
        optimizer: its optimizer.
        train_loader: loader with a ``ResumableBatchSampler`` (see :func:`make_loader`).
        eval_loader: evaluation loader (sharded without padding under DDP).
        num_classes: K.
        class_names: names of the K classes (for tables and JSON).
        epochs: total number of epochs.
        output_dir: folder of ``last.pt``, ``best.pt``, ``results.json``.
        dist_info: from :func:`~pointctx.train.distributed.init_distributed`.
        loss_fn: ``loss_fn(logits, target) -> scalar`` (also reported on the evaluation split).
        scheduler: stepped once per epoch, after evaluation (or ``None``).
        amp_dtype: ``torch.float16``/``torch.bfloat16`` for autocast on CUDA, ``None`` for off.
        forward: ``forward(model, batch, device) -> (logits, target, batch_size)``.
        logger: where progress lines go.
        progress: show tqdm bars (rank 0 only).
        eval_name: name of the evaluation split in logs and JSON (``"test"``, ``"val"``).
        run_info: extra JSON-ready entries of ``results.json`` (config, versions, dataset...).
        stop_after_epoch: stop (as if interrupted) once this many epochs are done.
        stop_after_steps: stop (as if interrupted) once this many optimizer steps are done.
        grad_clip: clip the gradient norm to this value (``None``: no clipping).
        session_start: ``time.perf_counter()`` origin of the ``wall_s`` timing (default: now).
        confusion: ``confusion(num_classes, device)`` -> metric accumulator (e.g. a partial of
            :class:`~pointctx.train.metrics.SegmentationConfusion` for per-pixel targets).
        best_metric: metric field that picks ``best.pt``: ``"oa"``, ``"macc"`` or ``"miou"``.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 train_loader: DataLoader, eval_loader: DataLoader, *, num_classes: int,
                 class_names: Sequence[str], epochs: int, output_dir: str | Path,
                 dist_info: DistInfo, loss_fn: Callable = nn.functional.cross_entropy,
                 scheduler=None, amp_dtype: torch.dtype | None = None,
                 forward: Callable = default_forward, logger: logging.Logger | None = None,
                 progress: bool = True, eval_name: str = "test", run_info: dict | None = None,
                 stop_after_epoch: int | None = None, stop_after_steps: int | None = None,
                 grad_clip: float | None = None, session_start: float | None = None,
                 confusion: Callable = ConfusionMatrix, best_metric: str = "oa") -> None:
        if not isinstance(train_loader.batch_sampler, ResumableBatchSampler):
            raise TypeError("`train_loader` must use a ResumableBatchSampler as batch_sampler (see "
                            f"make_loader), got {type(train_loader.batch_sampler).__name__}")
        if len(class_names) != num_classes:
            raise ValueError(f"`class_names` must have num_classes = {num_classes} entries, got "
                             f"{len(class_names)}")
        check_callable(confusion, "confusion")
        self.confusion = confusion
        self.metrics_class = getattr(confusion(num_classes, "cpu"), "metrics_class",
                                     ClassificationMetrics)
        if best_metric not in self.metrics_class._fields or best_metric in (
            "per_class", "support", "total", "iou"):
            choices = [f for f in self.metrics_class._fields
                       if f not in ("per_class", "support", "total", "iou")]
            raise ValueError(f"`best_metric` must be one of {choices}, got {best_metric!r}")
        self.best_metric, self.model, self.optimizer = best_metric, model, optimizer
        self.train_loader, self.eval_loader = train_loader, eval_loader
        self.num_classes, self.class_names = num_classes, list(class_names)
        self.epochs, self.output_dir = int(epochs), Path(output_dir)
        self.dist, self.device = dist_info, dist_info.device
        self.loss_fn, self.scheduler, self.forward = loss_fn, scheduler, forward
        self.amp_dtype = amp_dtype if self.device.type == "cuda" else None
        self.scaler = (torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None)
        self.log = logger or logging.getLogger("pointctx.train")
        self.progress, self.eval_name = progress and dist_info.is_main, eval_name
        self.run_info = plain(dict(run_info or {}))  # weights-only loadable checkpoints
        self.stop_after_epoch, self.stop_after_steps = stop_after_epoch, stop_after_steps
        self.grad_clip = grad_clip
        # state that checkpoints carry
        self.epoch = 0  # epochs fully done
        self.step_in_epoch = 0  # optimizer steps done in the current (unfinished) epoch
        self.global_step = 0
        self.history: list[dict] = []
        self.best: dict | None = None
        self.timing = {"train_s": 0.0, "eval_s": 0.0, "wall_s": 0.0, "sessions": 1}
        self._partial: dict | None = None  # this rank's counters of an interrupted epoch
        self._session_start = time.perf_counter() if session_start is None else session_start
        self.status = "running"
        self.stop_reason: str | None = None  # "SIGINT", "SIGTERM", "--stop-after-..." or None

    # ------------------------------------------------------------------ paths
    @property
    def last_path(self) -> Path:
        """``output_dir / "last.pt"``."""
        return self.output_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        """``output_dir / "best.pt"``."""
        return self.output_dir / "best.pt"

    @property
    def results_path(self) -> Path:
        """``output_dir / "results.json"``."""
        return self.output_dir / "results.json"

    # ------------------------------------------------------------------ checkpoints
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def _rank_state(self, counters: _EpochCounters | None) -> dict:
        return {"rng": capture_rng_state(),
                "partial": counters.state_dict() if counters is not None else None}

    def save(self, counters: _EpochCounters | None = None) -> None:
        """Write ``last.pt`` (collective under DDP: every rank must call it)."""
        ranks = all_gather_objects(self._rank_state(counters))
        if not self.dist.is_main:
            barrier()
            return
        state = {"version": CHECKPOINT_VERSION, "model": unwrap_model(self.model).state_dict(),
                 "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                 "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                 "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                 "global_step": self.global_step, "history": self.history, "best": self.best,
                 "timing": self._timing_now(), "world_size": self.dist.world_size, "ranks": ranks,
                 "run_info": self.run_info}
        save_checkpoint(self.last_path, state)
        barrier()

    def load(self, path: str | Path | None = None) -> dict:
        """Restore everything from a checkpoint written by :meth:`save` (default ``last.pt``)."""
        path = Path(path) if path is not None else self.last_path
        state = load_checkpoint(path, map_location="cpu")
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path}: checkpoint version {state.get('version')!r} is not "
                             f"supported (expected {CHECKPOINT_VERSION})")
        unwrap_model(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self.global_step, self.history = int(state["global_step"]), list(state["history"])
        self.best, self.timing = state["best"], dict(state["timing"])
        self.timing["sessions"] = int(self.timing.get("sessions", 1)) + 1
        ranks = state["ranks"]
        if state["world_size"] == self.dist.world_size:
            mine = ranks[self.dist.rank]
            restore_rng_state(mine["rng"])
            self._partial = mine["partial"]
        else:
            self.log.warning(f"checkpoint was written by {state['world_size']} process(es), this "
                             f"run has {self.dist.world_size}: RNG streams are reseeded, so the "
                             "continuation is not bit-identical to an uninterrupted run")
            restore_rng_state(ranks[0]["rng"])
            if self.step_in_epoch:
                self.log.warning("the interrupted epoch restarts from its beginning")
                self.step_in_epoch = 0
            self._partial = None
        return state

    def _timing_now(self) -> dict:
        t = dict(self.timing)
        t["wall_s"] = self.timing["wall_s"] + (time.perf_counter() - self._session_start)
        return t

    # ------------------------------------------------------------------ passes
    def _train_epoch(self, epoch: int, stop: GracefulInterrupt) -> tuple[bool, _EpochCounters]:
        """Run (the rest of) one epoch; returns (completed, counters)."""
        self.model.train()
        sampler: ResumableBatchSampler = self.train_loader.batch_sampler
        sampler.set_epoch(epoch, start_batch=self.step_in_epoch)
        if hasattr(self.train_loader.dataset, "set_epoch"):
            self.train_loader.dataset.set_epoch(epoch)
        counters = _EpochCounters(self.num_classes, self.device, self.confusion)
        if self._partial is not None and self.step_in_epoch > 0:
            counters.load_state_dict(self._partial)
        self._partial = None
        bar = tqdm(total=sampler.num_batches, initial=self.step_in_epoch, disable=not self.progress,
                   desc=f"epoch {epoch + 1}/{self.epochs} train", dynamic_ncols=True, leave=False)
        t0 = time.perf_counter()
        completed = True
        try:
            for batch in self.train_loader:
                with self._autocast():
                    logits, target, n = self.forward(self.model, batch, self.device)
                    loss = self.loss_fn(logits.float(), target)
                where = f"epoch {epoch + 1}, step {self.step_in_epoch + 1}"
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"training stopped: the loss is {float(loss.detach())} at {where}, "
                        f"before any update of this step ({self._saved_state()}); lower the "
                        "learning rate or check the data")
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler is not None:
                    # fp16: the scaler skips steps with inf/NaN gradients and lowers its scale
                    self.scaler.scale(loss).backward()
                    if self.grad_clip:
                        self.scaler.unscale_(self.optimizer)
                        nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    loss.backward()
                    self._check_grad_norm(float(loss.detach()), where)
                    self.optimizer.step()
                self.step_in_epoch += 1
                self.global_step += 1
                counters.update(loss, logits, target, n)
                if self.progress:
                    run_loss, run_acc = counters.running()
                    bar.set_postfix(loss=f"{run_loss:.3f}", acc=f"{100 * run_acc:.1f}%")
                    bar.update(1)
                at_limit = (
                    self.stop_after_steps is not None and self.global_step >= self.stop_after_steps)
                if any_across_ranks(stop.requested or at_limit, self.device):
                    if not stop.requested:
                        stop.request(f"--stop-after-steps {self.stop_after_steps}")
                    if self.step_in_epoch < sampler.num_batches:
                        completed = False
                        break
        finally:
            bar.close()
            self.timing["train_s"] += time.perf_counter() - t0
        return completed, counters

    def _check_grad_norm(self, loss: float, where: str) -> None:
        """Clip (with ``grad_clip``) and stop on a non-finite gradient norm before the step."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.grad_clip:
            norm = nn.utils.clip_grad_norm_(params, self.grad_clip)
        else:
            norm = nn.utils.get_total_norm([p.grad for p in params])
        if not bool(torch.isfinite(norm)):
            raise FloatingPointError(
                f"training stopped: the gradient norm is {float(norm)} at {where} (loss "
                f"{loss:.4g}); the weights were not updated ({self._saved_state()}); lower the "
                "learning rate, set a gradient clip, or check the data")

    def _saved_state(self) -> str:
        if self.last_path.is_file():
            return f"{self.last_path} holds the last saved state"
        return "no checkpoint was written yet"

    @torch.no_grad()
    def evaluate(self, desc: str | None = None) -> tuple[float, ClassificationMetrics, float]:
        """One pass over the evaluation loader; returns (mean loss, metrics, seconds)."""
        model = unwrap_model(self.model)
        model.eval()
        if self.dist.distributed:  # ranks' BN statistics drift apart: use rank 0's everywhere
            for buf in model.buffers():
                torch_dist.broadcast(buf, 0)
        counters = _EpochCounters(self.num_classes, self.device, self.confusion)
        t0 = time.perf_counter()
        bar = tqdm(self.eval_loader, disable=not self.progress, desc=desc or self.eval_name,
                   dynamic_ncols=True, leave=False)
        for batch in bar:
            with self._autocast():
                logits, target, n = self.forward(model, batch, self.device)
                loss = self.loss_fn(logits.float(), target)
            counters.update(loss, logits, target, n)
            if self.progress:
                run_loss, run_acc = counters.running()
                bar.set_postfix(loss=f"{run_loss:.3f}", acc=f"{100 * run_acc:.1f}%")
        loss, metrics, self._eval_samples = counters.reduce(self.device)
        seconds = time.perf_counter() - t0
        return loss, metrics, seconds

    # ------------------------------------------------------------------ main loop
    def fit(self) -> dict:
        """Train from the current state to ``epochs``; returns the results dict (also on disk)."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            for p in remove_stale_temp_files(self.output_dir):
                self.log.info(f"removed {p.name}, left by an interrupted write")
        if self.epoch >= self.epochs:
            self.log.info(f"nothing to do: {self.epoch} of {self.epochs} epochs are done")
            self.status = "finished"
            return self._write_results()
        with GracefulInterrupt() as stop:
            while self.epoch < self.epochs:
                epoch = self.epoch
                lr = self.optimizer.param_groups[0]["lr"]
                t_train0 = self.timing["train_s"]
                completed, counters = self._train_epoch(epoch, stop)
                if not completed:
                    self.save(counters)
                    self.status, self.stop_reason = "interrupted", stop.signal_name
                    self.log.info(f"interrupted ({stop.signal_name}) at epoch {epoch + 1}, step "
                                  f"{self.step_in_epoch}; checkpoint saved to {self.last_path}; "
                                  "continue with --resume")
                    return self._write_results()
                train_loss, train_m, n_train = counters.reduce(self.device)
                train_s = self.timing["train_s"] - t_train0
                eval_loss, eval_m, eval_s = self.evaluate(f"epoch {epoch + 1} {self.eval_name}")
                self.timing["eval_s"] += eval_s
                if self.scheduler is not None:
                    self.scheduler.step()
                self.epoch, self.step_in_epoch = epoch + 1, 0
                n_eval = self._eval_samples
                train_entry = {"loss": train_loss, "oa": train_m.oa, "macc": train_m.macc}
                if self.best_metric not in train_entry:
                    train_entry[self.best_metric] = getattr(train_m, self.best_metric)
                entry = {"epoch": self.epoch, "lr": lr, "train": train_entry,
                         self.eval_name: {"loss": eval_loss, **eval_m._asdict(), "samples": n_eval},
                         "train_s": train_s, "eval_s": eval_s, "train_samples": n_train,
                         "train_samples_per_s": n_train / train_s if train_s > 0 else None,
                         "eval_samples_per_s": n_eval / eval_s if eval_s > 0 else None}
                self.history.append(entry)
                key = self.best_metric
                score = getattr(eval_m, key)
                improved = self.best is None or score > self.best.get(key, float("-inf"))
                if improved:
                    self.best = {"epoch": self.epoch, "oa": eval_m.oa, "macc": eval_m.macc,
                                 key: score}
                    if self.dist.is_main:
                        save_checkpoint(
                            self.best_path,
                            {"model": unwrap_model(self.model).state_dict(), "epoch": self.epoch,
                             "metrics": eval_m.as_dict(self.class_names),
                             "run_info": self.run_info})
                miou = (f"mIoU {100 * eval_m.miou:.2f}  "
                        if isinstance(eval_m, SegmentationMetrics) else "")
                label = {"oa": "OA", "macc": "mAcc", "miou": "mIoU"}.get(key, key)
                self.log.info(f"epoch {self.epoch}/{self.epochs}  lr {lr:.5f}  train loss "
                              f"{train_loss:.4f} OA {100 * train_m.oa:.2f}  mAcc "
                              f"{100 * train_m.macc:.2f}  |  {self.eval_name} loss {eval_loss:.4f} "
                              f"{miou}OA {100 * eval_m.oa:.2f}  mAcc {100 * eval_m.macc:.2f}  |  "
                              f"best {label} {100 * self.best[key]:.2f} (epoch "
                              f"{self.best['epoch']})  |  {train_s:.1f}+{eval_s:.1f} s")
                self.save()
                self._write_results()
                limit = self.stop_after_epoch is not None and self.epoch >= self.stop_after_epoch
                if (stop.requested or limit) and self.epoch < self.epochs:
                    self.status = "interrupted"
                    why = stop.signal_name or f"--stop-after-epoch {self.stop_after_epoch}"
                    self.stop_reason = why
                    self.log.info(f"stopped ({why}) after epoch {self.epoch}; checkpoint saved to "
                                  f"{self.last_path}; continue with --resume")
                    return self._write_results()
        self.status = "finished"
        results = self._write_results()
        self._log_final(results)
        return results

    # ------------------------------------------------------------------ results
    def _epoch_metrics(self, entry: dict) -> ClassificationMetrics:
        e = entry[self.eval_name]
        return self.metrics_class(**{f: e[f] for f in self.metrics_class._fields})

    def _write_results(self) -> dict:
        timing = self._timing_now()
        train_samples = sum(h["train_samples"] for h in self.history)
        eval_samples = sum(h[self.eval_name].get("samples", h[self.eval_name]["total"])
                           for h in self.history)
        eval_time = sum(h["eval_s"] for h in self.history)
        train_time = sum(h["train_s"] for h in self.history)
        timing["train_samples_per_s"] = train_samples / train_time if train_time > 0 else None
        timing["eval_samples_per_s"] = eval_samples / eval_time if eval_time > 0 else None
        results = dict(self.run_info)
        results.update(status=self.status, epochs_done=self.epoch, epochs=self.epochs,
                       global_step=self.global_step, eval_split=self.eval_name, timing=timing)
        if self.history:
            for name, e in (("last", self.history[-1]),
                            ("best", self.history[self.best["epoch"] - 1])):
                results[name] = {"epoch": e["epoch"],
                                 **self._epoch_metrics(e).as_dict(self.class_names)}
        results["history"] = self.history
        if self.dist.is_main:
            atomic_write_json(self.results_path, results)
        return results

    def _log_final(self, results: dict) -> None:
        if not self.history:
            return
        for name, e in (("last", self.history[-1]), ("best", self.history[self.best["epoch"] - 1])):
            self.log.info(format_class_table(
                self._epoch_metrics(e), self.class_names,
                f"== {self.eval_name} split, {name} epoch ({e['epoch']}) =="))
        t = results["timing"]
        tput = t["train_samples_per_s"]
        self.log.info(
            f"done: {self.epoch} epochs, train {t['train_s']:.1f} s, eval {t['eval_s']:.1f} s, "
            f"wall {t['wall_s']:.1f} s"
            + (f", {tput:.1f} train samples/s" if tput else "")
            + f"; results in {self.results_path}")

