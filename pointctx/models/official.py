"""Official checkpoints in pointctx: :func:`convert_official` and :func:`load_official`."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from .._files import load_torch_file
from ._registry import create_model
from ._runs import key_mismatch

__all__ = ["convert_official", "load_official", "official_archs", "unwrap_checkpoint"]


# ----------------------------------------------------------------------------------------------
# tensor transforms
# ----------------------------------------------------------------------------------------------


def _flat(t: Tensor) -> Tensor:
    """Conv weight [O, I, *k] -> linear/reducer weight [O, I * prod(k)] (same element order)."""
    return t.reshape(t.shape[0], -1)


def _stem(t: Tensor) -> Tensor:
    """Official stem weight over [image, row, col] -> pointctx [image, x = col, y = row]."""
    if t.dim() < 2 or t.shape[1] < 2:
        raise ValueError(f"the stem weight must have >= 2 input channels, got {tuple(t.shape)}")
    c = t.shape[1]
    order = list(range(c - 2)) + [c - 1, c - 2]
    return _flat(t[:, order])


def _vec(t: Tensor) -> Tensor:
    return t.reshape(-1)


def _float32(t: Tensor) -> Tensor:
    return t.to(torch.float32)


# A rule: (official key regex, pointctx key template or function of the match, transform or None).
_Rule = tuple[str, Callable[[re.Match], str] | str, Callable[[Tensor], Tensor] | None]


def _coc_block(m: re.Match) -> str:
    rest = m.group(3)
    rest = {"layer_scale_1": "layer_scale_1.gamma", "layer_scale_2": "layer_scale_2.gamma",
            "token_mixer.sim_alpha": "token_mixer.alpha",
            "token_mixer.sim_beta": "token_mixer.beta"}.get(rest, rest)
    return f"stages.{int(m.group(1)) // 2}.{m.group(2)}.{rest}"


_COC_RULES: list[_Rule] = [
    (r"patch_embed\.proj\.weight", "reducers.0.proj.weight", _stem),
    (r"patch_embed\.proj\.bias", "reducers.0.proj.bias", None),
    (r"network\.(\d*[02468])\.(\d+)\.(token_mixer\.(?:f|v|proj)\.weight)", _coc_block, _flat),
    (r"network\.(\d*[02468])\.(\d+)\.(.+)", _coc_block, None),
    (r"network\.(\d*[13579])\.proj\.(weight)",
     lambda m: f"reducers.{(int(m.group(1)) + 1) // 2}.proj.{m.group(2)}", _flat),
    (r"network\.(\d*[13579])\.proj\.(bias)",
     lambda m: f"reducers.{(int(m.group(1)) + 1) // 2}.proj.{m.group(2)}", None),
    (r"(norm|head)\.(weight|bias)", r"\1.\2", None)]


def _pointmlp_op(coc: bool):
    def name(m: re.Match) -> str:
        i, j, rest = m.group(1), int(m.group(2)), m.group(3)
        if not coc:
            return f"pre.{i}.blocks.{j}.{rest}"
        return f"pre.{i}.blocks.{j // 2}.{rest}" if j % 2 else f"pre.{i}.coc.{j // 2}.{rest}"

    return name


def _pointmlp_rules(coc: bool) -> list[_Rule]:
    op = _pointmlp_op(coc)
    rules: list[_Rule] = [
        (r"embedding\.net\.0\.weight", "embedding.linear.weight", _flat),
        (r"embedding\.net\.1\.(.+)", r"embedding.norm.\1", None),
        (r"local_grouper_list\.(\d+)\.affine_alpha", r"affines.\1.alpha", _vec),
        (r"local_grouper_list\.(\d+)\.affine_beta", r"affines.\1.beta", _vec),
        (r"pre_blocks_list\.(\d+)\.transfer\.net\.0\.weight", r"pre.\1.transfer.linear.weight",
         _flat),
        (r"pre_blocks_list\.(\d+)\.transfer\.net\.1\.(.+)", r"pre.\1.transfer.norm.\2", None),
        (r"pre_blocks_list\.(\d+)\.operation\.(\d+)\.(net[12]\.0\.weight)",
         lambda m: op(m).replace(".0.weight", ".linear.weight"), _flat),
        (r"pre_blocks_list\.(\d+)\.operation\.(\d+)\.(net[12])\.1\.(.+)",
         lambda m: op(_Sub(m, 3, f"{m.group(3)}.norm.{m.group(4)}")), None),
        (r"pos_blocks_list\.(\d+)\.operation\.(\d+)\.(net[12])\.0\.weight",
         r"post.\1.\2.\3.linear.weight", _flat),
        (r"pos_blocks_list\.(\d+)\.operation\.(\d+)\.(net[12])\.1\.(.+)",
         r"post.\1.\2.\3.norm.\4", None),
        (r"classifier\.(\d+)\.(.+)", r"classifier.\1.\2", None)]
    if coc:  # the Context Clusters at the even places of each stage's `operation` list
        rules += [
            (r"pre_blocks_list\.(\d+)\.operation\.(\d+)\.(sim_alpha|sim_beta)",
             lambda m: op(_Sub(m, 3, m.group(3)[len("sim_"):])), None),
            (r"pre_blocks_list\.(\d+)\.operation\.(\d+)\.((?:fc1|fc2|fc_v)\.(?:weight|bias))",
             op, None)]
    return rules


def _conv1d(t: Tensor) -> Tensor:
    """Conv1d weight [O, I, 1] -> linear weight [O, I]; anything else unchanged."""
    return t.reshape(t.shape[0], -1) if t.dim() >= 3 else t


_ENC = "backbone."  # pointmlp_partseg: the PointMLP backbone; the head's parts sit at the top
_PARTSEG_RULES: list[_Rule] = [
    (r"embedding\.net\.0\.(weight|bias)", _ENC + r"embedding.linear.\1", _conv1d),
    (r"embedding\.net\.1\.(.+)", _ENC + r"embedding.norm.\1", None),
    (r"local_grouper_list\.(\d+)\.affine_(alpha|beta)", _ENC + r"affines.\1.\2", _vec),
    (r"pre_blocks_list\.(\d+)\.transfer\.net\.0\.(weight|bias)",
     _ENC + r"pre.\1.transfer.linear.\2", _conv1d),
    (r"pre_blocks_list\.(\d+)\.transfer\.net\.1\.(.+)", _ENC + r"pre.\1.transfer.norm.\2", None),
    (r"pre_blocks_list\.(\d+)\.operation\.(\d+)\.(net[12])\.0\.(weight|bias)",
     _ENC + r"pre.\1.blocks.\2.\3.linear.\4", _conv1d),
    (r"pre_blocks_list\.(\d+)\.operation\.(\d+)\.(net[12])\.1\.(.+)",
     _ENC + r"pre.\1.blocks.\2.\3.norm.\4", None),
    (r"pos_blocks_list\.(\d+)\.operation\.(\d+)\.(net[12])\.0\.(weight|bias)",
     _ENC + r"post.\1.\2.\3.linear.\4", _conv1d),
    (r"pos_blocks_list\.(\d+)\.operation\.(\d+)\.(net[12])\.1\.(.+)",
     _ENC + r"post.\1.\2.\3.norm.\4", None),
    (r"(decode_list\.\d+\.extraction\.operation\.\d+)\.(net[12])\.0\.(weight|bias)",
     r"\1.\2.linear.\3", _conv1d),
    (r"(decode_list\.\d+\.extraction\.operation\.\d+)\.(net[12])\.1\.(.+)",
     r"\1.\2.norm.\3", None),
    (r"(decode_list\.\d+\.fuse|cls_map\.\d+|gmp_map_list\.\d+|gmp_map_end)\.net\.0\."
     r"(weight|bias)", r"\1.linear.\2", _conv1d),
    (r"(decode_list\.\d+\.fuse|cls_map\.\d+|gmp_map_list\.\d+|gmp_map_end)\.net\.1\.(.+)",
     r"\1.norm.\2", None),
    (r"classifier\.(\d+)\.(.+)", r"classifier.\1.\2", _conv1d)]


def _partseg_kwargs(sd: Mapping[str, Tensor]) -> dict:
    last = max((k for k in sd if re.fullmatch(r"classifier\.\d+\.weight", k)),
               key=lambda k: int(k.split(".")[1]), default=None)
    if last is None or "cls_map.0.net.0.weight" not in sd:
        raise ValueError("the official part-segmentation state_dict needs `classifier.*.weight` "
                       "and `cls_map.0.net.0.weight`")
    return {"num_classes": int(sd[last].shape[0]),
            "num_categories": int(sd["cls_map.0.net.0.weight"].shape[1]),
            "in_channels": int(sd["embedding.net.0.weight"].shape[1]) - 3, "fps_start": "first"}


class _Sub:
    """A match whose group ``index`` reads ``value`` (to reuse a naming function)."""

    def __init__(self, m: re.Match, index: int, value: str):
        self._m, self._i, self._v = m, index, value

    def group(self, i: int) -> str:
        return self._v if i == self._i else self._m.group(i)


def _clue_block(m: re.Match) -> str:
    rest = m.group(3)
    for a, b in (("token_mixer.attn_alpha", "token_mixer.t"),
                 ("token_mixer.sim_alpha", "token_mixer.alpha"),
                 ("token_mixer.sim_beta", "token_mixer.beta"),
                 ("token_mixer.gate.fc1.weight", "token_mixer.gate.w1"),
                 ("token_mixer.gate.fc1.bias", "token_mixer.gate.b1"),
                 ("token_mixer.gate.fc2.weight", "token_mixer.gate.w2"),
                 ("token_mixer.gate.fc2.bias", "token_mixer.gate.b2"),
                 ("mlp.dwconv.dwconv.", "mlp.dwconv.")):
        if rest == a or (a.endswith(".") and rest.startswith(a)):
            rest = b + rest[len(a):]
            break
    return f"stages.{int(m.group(1)) // 2}.blocks.{m.group(2)}.{rest}"


def _clue_pool(m: re.Match) -> str:
    rest = m.group(2)
    for a, b in (("conv_skip.", "skip.proj."), ("conv_f.", "f."), ("conv_v.0.", "fc1."),
                 ("conv_v.2.", "fc2.")):
        if rest.startswith(a):
            rest = b + rest[len(a):]
            break
    return f"pools.{int(m.group(1)) // 2}.{rest}"


_CLUE_RULES: list[_Rule] = [
    (r"patch_embed\.proj\.weight", "stem.proj.weight", _stem),
    (r"patch_embed\.proj\.bias", "stem.proj.bias", None),
    (r"patch_embed\.norm\.(weight|bias)", r"stem_norm.\1", None),
    (r"pos_embed\.proj\.0\.(weight|bias)", r"pos_embed.\1", None),
    (r"network\.(\d*[02468])\.blocks\.(\d+)\.(token_mixer\.attn_alpha)", _clue_block, _float32),
    (r"network\.(\d*[02468])\.blocks\.(\d+)\.(token_mixer\.(?:k|v|proj)\.weight)", _clue_block,
     _flat),
    (r"network\.(\d*[02468])\.blocks\.(\d+)\.(.+)", _clue_block, None),
    (r"network\.(\d*[13579])\.((?:conv_skip|conv_f|conv_v\.0|conv_v\.2)\.weight)", _clue_pool,
     _flat),
    (r"network\.(\d*[13579])\.(.+)", _clue_pool, None),
    (r"(norm|head)\.(weight|bias)", r"\1.\2", None)]


# ----------------------------------------------------------------------------------------------
# architectures
# ----------------------------------------------------------------------------------------------


def _coc_kwargs(sd: Mapping[str, Tensor]) -> dict:
    kw = {"in_channels": int(sd["patch_embed.proj.weight"].shape[1]) - 2}
    kw["num_classes"] = int(sd["head.weight"].shape[0]) if "head.weight" in sd else 0
    return kw


def _pointmlp_kwargs(sd: Mapping[str, Tensor]) -> dict:
    last = max((k for k in sd if re.fullmatch(r"classifier\.\d+\.weight", k)),
               key=lambda k: int(k.split(".")[1]), default=None)
    if last is None:
        raise ValueError("the official PointMLP state_dict has no `classifier.*.weight`")
    return {"num_classes": int(sd[last].shape[0]), "fps_start": "first"}


_ARCHS: dict[str, tuple[list[_Rule], Callable[[Mapping[str, Tensor]], dict], str]] = {
    "coc_tiny": (_COC_RULES, _coc_kwargs, "patch_embed.proj.weight"),
    "coc_tiny_plain": (_COC_RULES, _coc_kwargs, "patch_embed.proj.weight"),
    "coc_small": (_COC_RULES, _coc_kwargs, "patch_embed.proj.weight"),
    "coc_medium": (_COC_RULES, _coc_kwargs, "patch_embed.proj.weight"),
    "pointmlp": (_pointmlp_rules(False), _pointmlp_kwargs, "embedding.net.0.weight"),
    "pointmlp_elite": (_pointmlp_rules(False), _pointmlp_kwargs, "embedding.net.0.weight"),
    "pointmlp_coc": (_pointmlp_rules(True), _pointmlp_kwargs, "embedding.net.0.weight"),
    "pointmlp_partseg": (_PARTSEG_RULES, _partseg_kwargs, "decode_list.0.fuse.net.0.weight"),
    "cluenet_micro": (_CLUE_RULES, _coc_kwargs, "patch_embed.proj.weight"),
    "cluenet_micro_cifar": (_CLUE_RULES, _coc_kwargs, "patch_embed.proj.weight"),
    "cluenet_tiny": (_CLUE_RULES, _coc_kwargs, "patch_embed.proj.weight"),
    "cluenet_small": (_CLUE_RULES, _coc_kwargs, "patch_embed.proj.weight"),
    "cluenet_base": (_CLUE_RULES, _coc_kwargs, "patch_embed.proj.weight")}


def official_archs() -> list[str]:
    """Names accepted by :func:`convert_official` and :func:`load_official`."""
    return sorted(_ARCHS)


def _spec(arch: str):
    if not isinstance(arch, str) or arch not in _ARCHS:
        raise ValueError(f"`arch` must be one of {official_archs()}, got {arch!r}")
    return _ARCHS[arch]


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------

_WRAPPERS = ("model", "net", "state_dict")


def unwrap_checkpoint(obj, weights_only: bool = True) -> dict[str, Tensor]:
    """The raw state_dict inside an official checkpoint.

    Args:
        obj: a ``torch.save`` file, a state_dict, or a checkpoint dict holding it (possibly
            nested) under ``"model"``, ``"net"`` or ``"state_dict"``; ``module.`` is stripped.
        weights_only: ``torch.load`` mode for a path (``False`` runs pickled code).
    """
    if isinstance(obj, (str, os.PathLike)):
        obj = load_torch_file(obj, weights_only=weights_only)
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a checkpoint path or a state_dict mapping, got "
                        f"{type(obj).__name__}")
    for _ in range(4):
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise ValueError("no state_dict found: expected tensors, or one of the keys "
                             f"{list(_WRAPPERS)}; got keys {sorted(map(str, obj))[:10]}")
        obj = inner
    sd = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not sd:
        raise ValueError("the checkpoint holds no tensors")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _rename(rules: list[_Rule], sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out, unknown = {}, []
    for key, value in sd.items():
        for pattern, target, transform in rules:
            m = re.fullmatch(pattern, key)
            if m is None:
                continue
            new = target(m) if callable(target) else m.expand(target)
            out[new] = transform(value) if transform is not None else value
            break
        else:
            unknown.append(key)
    if unknown:
        more = f", ... {len(unknown) - 4} more" if len(unknown) > 4 else ""
        raise ValueError(f"unknown keys for this architecture ({len(unknown)}): "
                         f"{', '.join(unknown[:4])}{more}")
    return out


def _model_kwargs(arch: str, sd: Mapping[str, Tensor], model_kwargs: dict) -> dict:
    _, infer, probe = _spec(arch)
    if probe not in sd:
        raise ValueError(f"this is not an official {arch!r} state_dict: it has no {probe!r} "
                         f"(first keys: {', '.join(list(sd)[:4])})")
    return {**infer(sd), **model_kwargs}


def _check_keys(arch: str, converted: Mapping[str, Tensor], model: nn.Module) -> None:
    wrong = key_mismatch(model.state_dict(), converted)
    if wrong:
        raise ValueError(f"the state_dict does not fit pointctx {arch!r}: {wrong}")


def convert_official(arch: str, state_dict, **model_kwargs) -> dict[str, Tensor]:
    """Convert an official state_dict (or checkpoint) to the pointctx model's ``state_dict``.

    Args:
        arch: the pointctx architecture (see :func:`official_archs` and docs/official.md).
        state_dict: as ``obj`` of :func:`unwrap_checkpoint`.
        **model_kwargs: options of the model the result is checked against.
    """
    rules, _, _ = _spec(arch)
    sd = unwrap_checkpoint(state_dict)
    kwargs = _model_kwargs(arch, sd, model_kwargs)
    converted = _rename(rules, sd)
    try:  # the keys and shapes only: no memory, no init
        with torch.device("meta"):
            skeleton = create_model(arch, **kwargs)
    except (NotImplementedError, RuntimeError):  # a constructor that needs real values
        skeleton = create_model(arch, **kwargs)
    _check_keys(arch, converted, skeleton)
    return converted


def load_official(arch: str, path_or_state_dict, *, weights_only: bool = True,
                  **model_kwargs) -> nn.Module:
    """Build the pointctx model of an official checkpoint and load its weights, in eval mode.

    Args:
        arch: the pointctx architecture (see :func:`official_archs`).
        path_or_state_dict: as ``obj`` of :func:`unwrap_checkpoint`.
        weights_only: ``torch.load`` mode for a path (see :func:`unwrap_checkpoint`).
        **model_kwargs: overrides of the model options (defaults: classes and channels from the
            weights, ``fps_start="first"`` for PointMLP, ``windows="adaptive"`` for CoC).
    """
    _spec(arch)
    sd = unwrap_checkpoint(path_or_state_dict, weights_only=weights_only)
    kwargs = _model_kwargs(arch, sd, model_kwargs)
    converted = _rename(_spec(arch)[0], sd)
    model = create_model(arch, **kwargs)
    _check_keys(arch, converted, model)
    model.load_state_dict(converted, strict=True)
    return model.eval()
