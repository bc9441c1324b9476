"""Command-line helpers shared by the example scripts (imported as ``_cli`` from their folder).

``argparse`` value types that give clean usage errors, the ``run`` option group, run folders,
resuming with the stored configuration, ``--eval-only`` loading, the refusal of a model of the
wrong task, and ``run_command``, the ``main`` of a training script.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

import pointctx
from pointctx.datasets import ModelNet40
from pointctx.train import distributed, load_checkpoint, setup_logger

CHECKOUT = Path(__file__).resolve().parents[1]
SAMPLES = CHECKOUT / "datasets"  # the small real samples that ship with the checkout
# the checkout's default data folder; the package itself reads only root= or $POINTCTX_DATA
DATA = Path(os.environ.setdefault("POINTCTX_DATA", str(CHECKOUT.parent / "shared" / "data")))


def modelnet40_sample(split: str = "train", **kwargs) -> ModelNet40:
    """The bundled real ModelNet40 sample: 10 classes, 40 train and 10 test shapes each."""
    return ModelNet40(SAMPLES / "modelnet40_sample.npz", split=split, layout="npz", **kwargs)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _ranged(parse: Callable, ok: Callable, what: str, doc: str) -> Callable:
    def convert(text: str):
        value = parse(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{what}, got {value}")
        return value

    convert.__doc__ = doc
    return convert


positive_int = _ranged(_int, lambda v: v >= 1, "must be a positive integer (>= 1)", "An int >= 1.")
nonnegative_int = _ranged(_int, lambda v: v >= 0, "must be an integer >= 0", "An int >= 0.")
positive_float = _ranged(_float, lambda v: v > 0, "must be > 0", "A finite number > 0.")
nonnegative_float = _ranged(_float, lambda v: v >= 0, "must be >= 0", "A finite number >= 0.")
ratio = _ranged(_float, lambda v: 0 < v <= 1, "must be a ratio in (0, 1]", "A number in (0, 1].")
open_ratio = _ranged(_float, lambda v: 0 < v < 1, "must lie in (0, 1)", "A number in (0, 1).")


def existing_dir(text: str) -> Path:
    """A path to an existing directory."""
    path = Path(text).expanduser()
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"directory {text!r} {what}")
    return path


def json_object(text: str) -> dict:
    """A JSON object, e.g. ``'{"embed_dim": 32}'``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(
            f"invalid JSON ({err.msg} at char {err.pos}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"must be a JSON object like '{{\"key\": 1}}', got {type(value).__name__}")
    return value


def add_run_options(parser, *, run_name: str, amp: bool = True, eval_split: str | None = None,
                    resume_const: str | bool = "auto", newest: bool = True, models: bool = False,
                    stop_after_epoch: bool = True, threads_default: str = "torch's choice"):
    """Add the ``run`` option group of a training script and return it.

    ``--seed``, ``--device``, ``--amp``, ``--threads``, ``--output``, ``--resume [DIR]``,
    ``--eval-only`` / ``--checkpoint`` (with ``eval_split``), ``--no-progress``,
    ``--stop-after-epoch``, ``--stop-after-steps``. ``run_name``: the default folder
    ``runs/<run_name>-<time>``; ``resume_const``: ``--resume`` alone gives ``"auto"`` (the
    newest run, :func:`find_resume_dir`) or ``True`` (:func:`resume_into_output`); ``models``:
    several models share the run folder.
    """
    if newest and resume_const != "auto":
        raise ValueError(f"add_run_options: newest=True needs resume_const='auto', got "
                         f"{resume_const!r}")
    run, folder = ("the runs", "a model's run folder") if models else ("the run", "a run folder")
    stop = "stop each model (with a checkpoint)" if models else "stop (with a checkpoint)"
    g = parser.add_argument_group("run")
    g.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto (default): cuda when available, else cpu")
    if amp:
        g.add_argument("--amp", choices=("auto", "off", "fp16", "bf16"), default="auto",
                       help="mixed precision on CUDA (auto: bf16 if supported, else fp16; off on "
                       "CPU)")
    g.add_argument("--threads", type=positive_int, default=None,
                   help=f"torch CPU threads per process (default: {threads_default})")
    g.add_argument("--output", type=Path, default=None,
                   help=f"run folder (default runs/{run_name}-<time>)")
    where = f"--output, or the newest runs/{run_name}-* with a checkpoint" if newest else "--output"
    kept = "; finished models are kept, an interrupted one continues" if models else ""
    g.add_argument("--resume", nargs="?", const=resume_const, default=None, metavar="DIR",
                   help=f"continue {run} in DIR (or in {where}) with the stored configuration; "
                   "options typed here override it, except those that define the experiment "
                   f"(they must match){kept}")
    if eval_split is not None:
        g.add_argument("--eval-only", action="store_true",
                       help="evaluate --checkpoint on the evaluation split and write the metrics "
                       f"as JSON (eval_{eval_split}.json beside the checkpoint, or in --output); "
                       "no training")
        g.add_argument("--checkpoint", type=Path, default=None, metavar="PATH",
                       help=f"with --eval-only: {folder}, last.pt or best.pt")
    g.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    if stop_after_epoch:
        g.add_argument("--stop-after-epoch", type=positive_int, default=None,
                       help=f"{stop} after this many epochs, as if interrupted")
    g.add_argument("--stop-after-steps", type=positive_int, default=None,
                   help=f"{stop} after this many optimizer steps, as if interrupted")
    return g


def add_budget_options(group, *, optimizer: str, items: str, min_lr_ratio: bool = False):
    """Add ``--epochs``, ``--batch-size``, ``--eval-batch-size``, ``--lr`` [, ``--min-lr-ratio``].

    All default to None (the script's recipe fills them). Returns ``group``.
    """
    group.add_argument("--epochs", type=positive_int, default=None, help="training epochs")
    group.add_argument("--batch-size", type=positive_int, default=None,
                       help=f"global batch of {items} (split over processes)")
    group.add_argument("--eval-batch-size", type=positive_int, default=None,
                       help=f"evaluation batch of {items} per process")
    group.add_argument("--lr", type=positive_float, default=None,
                       help=f"{optimizer} learning rate")
    if min_lr_ratio:
        group.add_argument("--min-lr-ratio", type=ratio, default=None,
                           help="cosine schedule ends at lr * this (recipe 0.01)")
    return group


def parse_explicit(parser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; ``args._explicit`` holds the options typed (:func:`explicit_options`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args._explicit = explicit_options(parser, argv)
    return args


def usage_error(parser, msg: str) -> int:
    """Print the usage and ``<prog>: error: msg`` to stderr, as argparse does; returns 2."""
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {msg}", file=sys.stderr)
    return 2


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def wrong_task(name: str, task: str, what: str = "argument --model",
               got: str | None = None) -> str | None:
    """The one-line usage error for a model ``name`` that is unknown or not a ``task`` model.

    ``task`` is one of :data:`pointctx.models.TASKS` (``got``: the model's task, e.g. a run's;
    default its registered one); the message names the models that fit. None if it fits.
    """
    known = pointctx.models.is_model(name)
    got = got or (pointctx.models.model_task(name) if known else None)
    fits = pointctx.list_models(task=task)
    if known and got == task:
        return None
    got = (f"{name} is {_a(got)} model, not {_a(task)} model" if known
           else f"unknown model {name!r}")
    return f"{what}: {got}; choose one of {', '.join(fits)}"


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's (global) and torch's RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_versions(device: torch.device) -> dict:
    """Software, platform and device of a run (for ``results.json``)."""
    v = {
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # a TorchVersion: a plain str loads weights-only
        "numpy": str(np.__version__),
        "pointctx": str(pointctx.__version__),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch_cluster": bool(pointctx.ops.cluster_available()),
    }
    if device.type == "cuda":
        v["cuda"] = str(torch.version.cuda)
        v["gpu"] = torch.cuda.get_device_name(device)
    return v


def explicit_options(parser, argv: Sequence[str]) -> set[str]:
    """Destinations of the options given on the command line ``argv`` (not the defaults)."""
    probe = argparse.ArgumentParser(add_help=False, allow_abbrev=parser.allow_abbrev)
    for action in parser._actions:  # same options, no defaults, no type checks
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            kw = {"dest": action.dest, "default": argparse.SUPPRESS}
            if isinstance(action, argparse.BooleanOptionalAction):
                kw["action"] = argparse.BooleanOptionalAction
            elif isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
                kw["action"] = "store_true"
            else:
                kw["nargs"] = action.nargs
            probe.add_argument(*action.option_strings, **kw)
    known, _ = probe.parse_known_args(list(argv))
    return set(vars(known))


def continue_config(parser, args, saved: dict, explicit: Iterable[str],
                    keep: Iterable[str] = ()) -> list[str]:
    """Set every option of ``saved`` not in ``explicit`` or ``keep``; returns the names taken.

    Stored strings go through the option's ``type`` again (e.g. paths).
    """
    explicit, keep = set(explicit), set(keep)
    types = {a.dest: a.type for a in parser._actions}
    taken = []
    for key, value in saved.items():
        if key in explicit or key in keep or not hasattr(args, key):
            continue
        conv = types.get(key)
        if isinstance(value, str) and conv not in (None, str):
            try:
                value = conv(value)
            except (argparse.ArgumentTypeError, TypeError, ValueError) as err:
                raise ValueError(f"the stored --{key.replace('_', '-')} {value!r} is no longer "
                                 f"valid ({err}); give it on the command line") from None
        setattr(args, key, value)
        taken.append(key)
    return taken


def config_mismatch(saved: dict, config: dict, keys: Iterable[str]) -> str | None:
    """``"--epochs was 2, now 12, ..."`` for the ``keys`` whose values differ, else ``None``."""
    diff = [(k, saved.get(k), config.get(k)) for k in keys if saved.get(k) != config.get(k)]
    if not diff:
        return None
    return ", ".join(f"--{k.replace('_', '-')} was {a!r}, now {b!r}" for k, a, b in diff)


def args_config(args: argparse.Namespace) -> dict:
    """The parsed options as a JSON-ready dict (private entries dropped, paths as strings)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
            if not k.startswith("_")}


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` on CUDA (``None`` elsewhere and for ``off``)."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def share_run_folder(out: Path, dist_info) -> Path:
    """Rank 0's run folder ``out``, broadcast to every rank (unchanged without DDP)."""
    if not dist_info.distributed:
        return out
    import torch.distributed as dist

    box = [str(out)]
    dist.broadcast_object_list(box, src=0)
    return Path(box[0])


def build_model(name: str, model_kwargs: dict, fixed: dict, *, override: bool = False):
    """``(create_model(name, **fixed, **model_kwargs), None)`` or ``(None, usage message)``.

    With ``override`` a key of ``model_kwargs`` replaces the one of ``fixed``; without it a key
    given in both is refused like any other argument the model rejects.
    """
    try:
        if override:
            return pointctx.create_model(name, **{**fixed, **model_kwargs}), None
        return pointctx.create_model(name, **fixed, **model_kwargs), None
    except (TypeError, ValueError) as err:
        return None, (f"argument --model-kwargs: {name} rejected {json.dumps(model_kwargs)}: "
                      f"{err}")


def place_model(model: torch.nn.Module, dist_info, seed: int | None = None) -> torch.nn.Module:
    """``model`` on the device, in ``DistributedDataParallel`` under DDP.

    With ``seed``, torch's RNG is then reseeded with ``seed * 1000 + rank + 1`` (a dropout
    stream per process).
    """
    model.to(dist_info.device)
    if dist_info.distributed:
        from torch.nn.parallel import DistributedDataParallel

        device = dist_info.device
        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if seed is not None:
        torch.manual_seed(seed * 1000 + dist_info.rank + 1)
    return model


def resume_trainer(trainer, log) -> dict:
    """``trainer.load()`` of its ``last.pt``, logged; returns the checkpoint dict."""
    state = trainer.load()
    log.info(f"resumed from {trainer.last_path}: {trainer.epoch} epochs and "
             f"{trainer.step_in_epoch} steps of epoch {trainer.epoch + 1} done")
    return state


def exit_status(stop_reason: str | None) -> int:
    """130 after SIGINT, 143 after SIGTERM (as a shell reports them), else 0."""
    return {"SIGINT": 130, "SIGTERM": 143}.get(stop_reason, 0)


def run_command(argv, parse_args: Callable, run: Callable, usage_error: Callable,
                evaluate: Callable | None = None, check_batch_split: bool = False) -> int:
    """The ``main`` of a training script; returns its exit status.

    Parses ``argv``, sets ``--threads``, sets up ``torchrun`` processes, then calls
    ``evaluate(args, dist_info)`` for ``--eval-only``, else ``run(args, dist_info, argv,
    t_start)``. A bad ``--device`` (or, with ``check_batch_split``, a ``--batch-size`` the
    processes cannot share) is a usage error; Ctrl-C outside training exits with 130.
    """
    t_start = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        dist_info = distributed.init_distributed(args.device)
    except ValueError as err:
        return usage_error(f"argument --device: {err}")
    try:
        if evaluate is not None and getattr(args, "eval_only", False):
            return evaluate(args, dist_info)
        err = check_batch_split and batch_split_error(args.batch_size, dist_info.world_size)
        if err:
            return usage_error(err)
        return run(args, dist_info, argv, t_start)
    except KeyboardInterrupt:  # outside the training loop (set-up, final report)
        print("interrupted outside training: nothing more to save", file=sys.stderr)
        return 130
    finally:
        distributed.cleanup_distributed()


def find_resume_dir(resume, output: Path | None, prefix: str) -> Path:
    """``--resume DIR``, else ``--output``, else the newest ``runs/<prefix>-*`` with a last.pt."""
    if resume not in (None, "auto"):
        return Path(resume)
    if output is not None:
        return Path(output)
    runs = [r for r in sorted(Path("runs").glob(f"{prefix}-*")) if (r / "last.pt").is_file()]
    if not runs:
        raise FileNotFoundError(
            f"--resume: no runs/{prefix}-*/last.pt to continue; give the run folder (--resume DIR)")
    return runs[-1]


def resume_into_output(parser, args, what: str = "the run folder") -> None:
    """``--resume DIR`` (``const=True``) becomes ``args.output``; conflicts exit with status 2."""
    if isinstance(args.resume, str):
        if args.output is not None and Path(args.resume) != args.output:
            parser.error(f"--resume {args.resume} and --output {args.output} name different "
                         "folders")
        args.output = Path(args.resume)
        args.resume = True
    if args.resume and args.output is None:
        parser.error(f"--resume needs {what}: --resume DIR")


def choose_run_folder(parser, args, prefix: str, run_control: Iterable[str],
                      identity_keys: Iterable[str], *, config: Callable = args_config,
                      missing: Callable[[Path], str] | None = None):
    """``(folder, None)`` or ``(None, usage message)`` for a one-model training script.

    ``--resume``: the run :func:`find_resume_dir` names; its stored configuration fills the
    options not typed (``run_control`` excepted) and must match ``config(args)`` on
    ``identity_keys``. ``--output DIR``: ``DIR`` unless it holds a run. Neither:
    ``runs/<prefix>-<time>``. Nothing is created.
    """
    if args.resume is None:
        out = args.output
        if out is None:
            return Path("runs") / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}", None
        if (out / "last.pt").exists():
            return None, (f"argument --output: {out} already holds a run (last.pt); pass "
                          "--resume to continue it or choose another folder")
        return out, None
    try:
        out = find_resume_dir(args.resume, args.output, prefix)
    except FileNotFoundError as err:
        return None, str(err)
    if not (out / "last.pt").is_file():
        return None, (missing(out) if missing is not None
                      else f"--resume: {out / 'last.pt'} does not exist")
    try:
        saved = load_checkpoint(out / "last.pt").get("run_info", {}).get("config", {})
        continue_config(parser, args, saved, args._explicit, run_control)
    except ValueError as err:
        return None, f"--resume: {err}"
    pretty = config_mismatch(saved, config(args), identity_keys)
    if pretty:
        return None, f"--resume: the run in {out} used other settings: {pretty}"
    return out, None


def open_run_log(out: Path, dist_info, name: str):
    """``(out, logger)``: rank 0's run folder on every rank, created, logging to ``log.txt``."""
    out = share_run_folder(out, dist_info)
    if dist_info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    log = setup_logger(name, out / "log.txt", dist_info.is_main)
    log.info(f"pointctx {pointctx.__version__} | torch {torch.__version__} | device "
             f"{dist_info.device} | processes {dist_info.world_size} | run folder {out}")
    return out, log


def batch_split_error(batch_size: int, world_size: int) -> str | None:
    """The usage error of a global ``--batch-size`` the processes cannot share."""
    if batch_size % world_size:
        return (f"argument --batch-size: {batch_size} is not divisible by the {world_size} "
                "processes")
    return None


def load_eval_model(parser, args, device, task: str, keep: Iterable[str]):
    """``--eval-only``: ``(model, None)`` or ``(None, usage message)``.

    Loads ``args.checkpoint`` (:func:`pointctx.load_model`; its ``.model`` takes inputs as the
    dataset gives them), refuses a run of another ``task`` (:func:`wrong_task`) and fills the
    options the user did not give (``keep`` excepted) from the run's configuration.
    """
    try:
        model = pointctx.load_model(args.checkpoint, map_location=device)
    except (FileNotFoundError, ValueError) as err:
        return None, f"argument --checkpoint: {err}"
    err = wrong_task(model.run_info["model"]["name"], task,
                     f"argument --checkpoint: {args.checkpoint}", model.task)
    if err:
        return None, err
    try:
        continue_config(parser, args, model.run_info.get("config", {}), args._explicit, keep)
    except ValueError as err:
        return None, f"argument --checkpoint: {err}"
    return model, None


def eval_output_path(args, split: str) -> Path:
    """``eval_<split>.json`` in ``--output``, else beside ``--checkpoint``."""
    folder = args.output or (args.checkpoint.parent if args.checkpoint.is_file()
                             else args.checkpoint)
    return Path(folder) / f"eval_{split}.json"
