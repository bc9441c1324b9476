"""Command-line helpers shared by the example scripts.

(One concept in one module, over 500 lines: the example scripts' common command line, from the
option types and groups to ``main``, resuming and ``--eval-only``.)

* ``argparse`` value types that turn bad command-line values into clean usage errors: each raises
  :class:`argparse.ArgumentTypeError`, which ``argparse`` reports as ``error: argument --x:
  <message>`` with exit status 2 instead of a traceback;
* :func:`add_run_options`: the ``run`` option group of a training script (``--seed``,
  ``--device``, ``--amp``, ``--threads``, ``--output``, ``--resume``, ``--eval-only`` /
  ``--checkpoint``, ``--no-progress``, ``--stop-after-epoch``, ``--stop-after-steps``) and
  :func:`add_budget_options` (``--epochs``, ``--batch-size``, ``--eval-batch-size``, ``--lr``) and
  :func:`parse_explicit` (parse, remembering which options were typed);
* :func:`usage_error`, :func:`seed_everything`, :func:`run_versions`, :func:`args_config`,
  :func:`amp_dtype`;
* :func:`build_model` (``--model-kwargs`` a model rejects as a usage error) and
  :func:`place_model` (to the device, in ``DistributedDataParallel`` under ``torchrun``);
  :func:`resume_trainer` (load ``last.pt``, logged) and :func:`exit_status` (of a run stopped by
  a signal);
* :func:`run_command`: the ``main`` of a training script (threads, DDP set-up, Ctrl-C outside
  training, clean-up) and :func:`share_run_folder` (rank 0's run folder on every rank);
* resuming with the stored configuration: :func:`explicit_options` (which options the user typed)
  and :func:`continue_config` (every other value comes from the run being continued);
* :func:`resume_into_output` (``--resume DIR`` names the ``--output`` folder) and
  :func:`batch_split_error` (a global batch that the processes cannot share);
* the run folder of a one-model script: :func:`choose_run_folder` (``--resume``, ``--output`` or
  a new time-stamped folder) and :func:`open_run_log` (created on rank 0, shared, logged);
* ``--eval-only``: :func:`load_eval_model` (the checkpoint's model, its run's configuration
  filled in) and :func:`eval_output_path` (where the metrics JSON goes).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "positive_int",
    "nonnegative_int",
    "positive_float",
    "nonnegative_float",
    "ratio",
    "open_ratio",
    "existing_dir",
    "json_object",
    "add_run_options",
    "add_budget_options",
    "parse_explicit",
    "usage_error",
    "seed_everything",
    "run_versions",
    "args_config",
    "amp_dtype",
    "build_model",
    "place_model",
    "resume_trainer",
    "exit_status",
    "run_command",
    "share_run_folder",
    "find_resume_dir",
    "choose_run_folder",
    "open_run_log",
    "resume_into_output",
    "batch_split_error",
    "load_eval_model",
    "eval_output_path",
    "explicit_options",
    "continue_config",
    "config_mismatch",
]


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


# The argparse types below repeat one shape on purpose: one small, named type per range, so that
# each option's usage error says which range it expects.
def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def ratio(text: str) -> float:
    """A number in (0, 1]."""
    value = _float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a ratio in (0, 1], got {value}")
    return value


def open_ratio(text: str) -> float:
    """A number in (0, 1)."""
    value = _float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1), got {value}")
    return value


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
            f"invalid JSON ({err.msg} at char {err.pos}): {text!r}"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"must be a JSON object like '{{\"key\": 1}}', got {type(value).__name__}"
        )
    return value


# --------------------------------------------------------------------------- the run options
def add_run_options(
    parser: argparse.ArgumentParser,
    *,
    run_name: str,
    amp: bool = True,
    eval_split: str | None = None,
    resume_const: str | bool = "auto",
    newest: bool = True,
    models: bool = False,
    stop_after_epoch: bool = True,
    threads_default: str = "torch's choice",
):
    """Add the ``run`` option group of a training script and return the group.

    The options, in this order: ``--seed`` (int >= 0, default 0), ``--device`` (auto, cpu or
    cuda), ``--amp`` (auto, off, fp16 or bf16; default auto), ``--threads`` (int >= 1, default
    None), ``--output`` (a path, default None), ``--resume [DIR]``, ``--eval-only`` with
    ``--checkpoint PATH``, ``--no-progress``, ``--stop-after-epoch`` and ``--stop-after-steps``
    (ints >= 1, default None). The caller may add script-specific run options to the group.

    Args:
        parser: the script's parser.
        run_name: the default run folder is ``runs/<run_name>-<time>`` (e.g.
            ``"camvid-<model>"``); said in the help of ``--output`` and ``--resume``.
        amp: add ``--amp`` (mixed precision on CUDA, see :func:`amp_dtype`).
        eval_split: add ``--eval-only`` and ``--checkpoint``; the metrics go to
            ``eval_<eval_split>.json`` (e.g. ``"val"``, or ``"<split>"`` when it varies).
        resume_const: the value of ``--resume`` given without a folder: ``"auto"`` (the script
            finds the run, e.g. with :func:`find_resume_dir`) or ``True`` (for
            :func:`resume_into_output`).
        newest: the help says that ``--resume`` alone continues the newest
            ``runs/<run_name>-*`` holding a checkpoint (only with ``resume_const="auto"``).
        models: the script trains several models in one run folder (help: "each model").
        stop_after_epoch: add ``--stop-after-epoch``.
        threads_default: what the help of ``--threads`` gives as its default.

    Raises:
        ValueError: ``newest`` without ``resume_const="auto"``.
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

    Every option defaults to None (the script's recipe fills it); the counts are ints >= 1, the
    learning rate a number > 0 and the ratio a number in (0, 1].

    Args:
        group: a parser or argument group (e.g. the script's ``"optimisation"`` group).
        optimizer: named in the help of ``--lr`` (e.g. ``"AdamW"``).
        items: what a batch holds, for the help (e.g. ``"images"``).
        min_lr_ratio: add ``--min-lr-ratio`` (the cosine schedule ends at ``lr *`` it).

    Returns:
        ``group``.
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


def parse_explicit(parser: argparse.ArgumentParser,
                   argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``); ``args._explicit`` holds the options typed.

    ``args._explicit`` is :func:`explicit_options` of ``argv``: what a resumed run or
    ``--eval-only`` keeps from this command line rather than from the stored configuration.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args._explicit = explicit_options(parser, argv)
    return args


# --------------------------------------------------------------------------- script helpers
def usage_error(parser: argparse.ArgumentParser, msg: str) -> int:
    """Print the usage and ``<prog>: error: msg`` to stderr, as argparse does; returns 2."""
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {msg}", file=sys.stderr)
    return 2


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's (global) and torch's RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_versions(device: torch.device) -> dict:
    """Software, platform and device of a run (for ``results.json``)."""
    import pointctx
    from pointctx import ops

    v = {
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # a TorchVersion: a plain str loads weights-only
        "numpy": str(np.__version__),
        "pointctx": str(pointctx.__version__),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch_cluster": bool(ops.cluster_available()),
    }
    if device.type == "cuda":
        v["cuda"] = str(torch.version.cuda)
        v["gpu"] = torch.cuda.get_device_name(device)
    return v


def explicit_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """Destinations of the options given on the command line ``argv`` (not the defaults)."""
    probe = argparse.ArgumentParser(add_help=False, allow_abbrev=parser.allow_abbrev)
    for action in parser._actions:  # same options, no defaults, no type checks
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            kw = {"dest": action.dest, "default": argparse.SUPPRESS}
            if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction,
                                   argparse.BooleanOptionalAction)):
                kw["action"] = "store_true" if not isinstance(
                    action, argparse.BooleanOptionalAction) else argparse.BooleanOptionalAction
            else:
                kw["nargs"] = action.nargs
            probe.add_argument(*action.option_strings, **kw)
    known, _ = probe.parse_known_args(list(argv))
    return set(vars(known))


def continue_config(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    saved: dict,
    explicit: Iterable[str],
    keep: Iterable[str] = (),
) -> list[str]:
    """Take every value of the stored configuration ``saved`` that the user did not type.

    Options in ``explicit`` (see :func:`explicit_options`) and in ``keep`` (run control such as
    ``--output`` or ``--threads``) keep their command-line values; the others get the stored ones
    (strings go through the option's ``type`` again, e.g. paths). Returns the names taken.
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
    """The parsed options as a JSON-ready dict (what a run stores as its ``config``).

    Private (``_``-prefixed) entries are dropped and paths become strings.
    """
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
            if not k.startswith("_")}


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an ``--amp`` choice (``off``, ``auto``, ``bf16``, ``fp16``).

    Mixed precision is used on CUDA only (``None`` elsewhere and for ``off``); ``auto`` picks
    bfloat16 where the GPU supports it, else float16.
    """
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
    """Create the model ``name`` from the script's ``fixed`` arguments and ``--model-kwargs``.

    Args:
        name: registered model name.
        model_kwargs: the ``--model-kwargs`` object.
        fixed: the arguments the script sets (e.g. ``num_classes``).
        override: a key of ``model_kwargs`` replaces the one of ``fixed``; without it, a key given
            in both is rejected (a usage error, like any other argument the model refuses).

    Returns:
        ``(model, None)``, or ``(None, message)`` when the model rejects the arguments (a
        ``TypeError`` or ``ValueError``; the message names the model and the JSON given).
    """
    from ..models import create_model

    try:
        if override:
            return create_model(name, **{**fixed, **model_kwargs}), None
        return create_model(name, **fixed, **model_kwargs), None
    except (TypeError, ValueError) as err:
        return None, (f"argument --model-kwargs: {name} rejected {json.dumps(model_kwargs)}: "
                      f"{err}")


def place_model(model: torch.nn.Module, dist_info, seed: int | None = None) -> torch.nn.Module:
    """``model`` on ``dist_info.device``, wrapped in ``DistributedDataParallel`` under DDP.

    With ``seed``, torch's RNG is then reseeded with ``seed * 1000 + rank + 1``: a different
    dropout / drop-path stream per process (identical weights came from ``seed`` before).
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
    """``trainer.load()`` of its ``last.pt``, logged with the epochs and steps already done.

    Returns:
        The checkpoint dict (see ``Trainer.load``; its errors propagate).
    """
    state = trainer.load()
    log.info(f"resumed from {trainer.last_path}: {trainer.epoch} epochs and "
             f"{trainer.step_in_epoch} steps of epoch {trainer.epoch + 1} done")
    return state


def exit_status(stop_reason: str | None) -> int:
    """The exit status of a run the trainer stopped (``Trainer.stop_reason``).

    130 after SIGINT (Ctrl-C) and 143 after SIGTERM, as a shell reports a process killed by the
    signal; 0 for a planned stop (``--stop-after-epoch`` / ``--stop-after-steps``).
    """
    return {"SIGINT": 130, "SIGTERM": 143}.get(stop_reason, 0)


def run_command(
    argv: Sequence[str] | None,
    parse_args: Callable[[list[str]], argparse.Namespace],
    run: Callable[..., int],
    usage_error: Callable[[str], int],
    evaluate: Callable[..., int] | None = None,
    check_batch_split: bool = False,
) -> int:
    """The ``main`` of a training script; returns its exit status.

    Parses ``argv`` (default ``sys.argv[1:]``), sets ``--threads`` (when given), sets up the
    processes of a ``torchrun`` launch (an unusable ``--device`` is a usage error), then calls
    ``evaluate(args, dist_info)`` when ``--eval-only`` is set, else
    ``run(args, dist_info, argv, t_start)``; with ``check_batch_split``, a ``--batch-size`` the
    processes cannot share is a usage error before ``run`` (:func:`batch_split_error`). Ctrl-C
    outside the training loop (which saves its own checkpoint) exits with status 130; the process
    group is always cleaned up.
    """
    from .distributed import cleanup_distributed, init_distributed

    t_start = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        dist_info = init_distributed(args.device)
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
        cleanup_distributed()


def find_resume_dir(resume: str | Path | None, output: Path | None, prefix: str) -> Path:
    """The run folder that ``--resume`` continues.

    ``--resume DIR`` names it; ``--resume`` alone (``"auto"``) takes ``--output`` when given, else
    the newest ``runs/<prefix>-*`` folder holding a ``last.pt``.

    Raises:
        FileNotFoundError: no such run exists (the message says to give ``--resume DIR``).
    """
    if resume not in (None, "auto"):
        return Path(resume)
    if output is not None:
        return Path(output)
    runs = [r for r in sorted(Path("runs").glob(f"{prefix}-*")) if (r / "last.pt").is_file()]
    if not runs:
        raise FileNotFoundError(
            f"--resume: no runs/{prefix}-*/last.pt to continue; give the run folder (--resume DIR)"
        )
    return runs[-1]


def resume_into_output(parser: argparse.ArgumentParser, args: argparse.Namespace,
                       what: str = "the run folder") -> None:
    """``--resume DIR`` (``nargs="?"``, ``const=True``) as the run folder ``args.output``.

    ``--resume DIR`` sets ``args.output = DIR`` and ``args.resume = True``; a different
    ``--output`` or ``--resume`` without a folder is a usage error (``parser.error``, exit 2)
    saying that ``what`` is needed.
    """
    if isinstance(args.resume, str):
        if args.output is not None and Path(args.resume) != args.output:
            parser.error(f"--resume {args.resume} and --output {args.output} name different "
                         "folders")
        args.output = Path(args.resume)
        args.resume = True
    if args.resume and args.output is None:
        parser.error(f"--resume needs {what}: --resume DIR")


def choose_run_folder(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    prefix: str,
    run_control: Iterable[str],
    identity_keys: Iterable[str],
    *,
    config: Callable[[argparse.Namespace], dict] = args_config,
    missing: Callable[[Path], str] | None = None,
) -> tuple[Path | None, str | None]:
    """The run folder of a one-model training script, or the usage error that stops the run.

    * ``--resume [DIR]`` (``const="auto"``): the run :func:`find_resume_dir` names (``DIR``,
      ``--output`` or the newest ``runs/<prefix>-*``). Its ``last.pt`` must exist; its stored
      configuration fills every option not typed (:func:`continue_config`, ``run_control``
      excepted) and must agree with ``config(args)`` on ``identity_keys``
      (:func:`config_mismatch`).
    * ``--output DIR``: ``DIR``, unless it already holds a run (``last.pt``).
    * neither: ``runs/<prefix>-<time>``.

    Args:
        parser: the script's parser.
        args: the parsed options (with ``_explicit``); a resumed run fills them.
        prefix: the run folders' name before the time stamp (e.g. ``"camvid-<model>"``).
        run_control: options a resumed run takes from this command line.
        identity_keys: options that must match the stored run.
        config: the configuration a run stores (default :func:`args_config`).
        missing: the message for a resumed folder without ``last.pt`` (default: it does not
            exist).

    Returns:
        ``(folder, None)`` or ``(None, message)``; nothing is created.
    """
    from .checkpoint import load_checkpoint

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
    """Rank 0's run folder ``out`` on every rank, created, with its logger (``log.txt``).

    Logs the versions, the device, the number of processes and the folder. Returns ``(out,
    logger)``.
    """
    import pointctx

    from .log import setup_logger

    out = share_run_folder(out, dist_info)
    if dist_info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    log = setup_logger(name, out / "log.txt", dist_info.is_main)
    log.info(f"pointctx {pointctx.__version__} | torch {torch.__version__} | device "
             f"{dist_info.device} | processes {dist_info.world_size} | run folder {out}")
    return out, log


def batch_split_error(batch_size: int, world_size: int) -> str | None:
    """The usage error of a global ``--batch-size`` the ``world_size`` processes cannot share."""
    if batch_size % world_size:
        return (f"argument --batch-size: {batch_size} is not divisible by the {world_size} "
                "processes")
    return None


def load_eval_model(parser: argparse.ArgumentParser, args: argparse.Namespace, device,
                    kind: str, describe: str, keep: Iterable[str]):
    """``--eval-only``: load ``args.checkpoint`` and fill ``args`` from the run's configuration.

    Args:
        parser: the script's parser (for :func:`continue_config`).
        args: the parsed options (``checkpoint``, ``_explicit``); the options the user did not
            give take the trained run's values.
        device: where the model is loaded.
        kind: the input kind the script trains (``run_info["inputs"]["kind"]``, e.g.
            ``"points"``, ``"images"``).
        describe: what the checkpoint must be, for the message (e.g. ``"an image model"``).
        keep: options that keep this invocation's value (see :func:`continue_config`).

    Returns:
        ``(model, None)``, or ``(None, message)`` for a usage error: the checkpoint does not load,
        holds a model trained on other inputs, or its configuration conflicts with the options.
    """
    from ..models import load_model

    try:
        model = load_model(args.checkpoint, map_location=device)
    except (FileNotFoundError, ValueError) as err:
        return None, f"argument --checkpoint: {err}"
    info = model.run_info
    if info.get("inputs", {}).get("kind", kind) != kind:
        return None, (f"argument --checkpoint: {args.checkpoint} is not {describe} (use the "
                      "script that trained it)")
    try:
        continue_config(parser, args, info.get("config", {}), args._explicit, keep)
    except ValueError as err:
        return None, f"argument --checkpoint: {err}"
    return model, None


def eval_output_path(args: argparse.Namespace, split: str) -> Path:
    """``eval_<split>.json`` in ``--output``, else beside ``--checkpoint`` (in a run folder)."""
    folder = args.output or (args.checkpoint.parent if args.checkpoint.is_file()
                             else args.checkpoint)
    return Path(folder) / f"eval_{split}.json"
