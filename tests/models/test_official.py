"""Official checkpoints: conversion, loading and logits against the official-code fixtures.

The fixtures (``shared/fixtures/official``, see its README) hold the manifest of an official
state_dict, a seed for ``fill.py`` (which rebuilds the weights), an input and the official
model's outputs for it.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

import pointctx
from pointctx.models import convert_official, create_model, load_official, official_archs

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "official"

pytestmark = pytest.mark.skipif(
    not (FIXTURES / "fill.py").is_file(),
    reason=f"official-output fixtures not found at {FIXTURES} (shared/fixtures/official)",
)

# fixture -> pointctx arch
CASES = {
    "coc_tiny_224": "coc_tiny",
    "coc_tiny_256": "coc_tiny",
    "coc_small_224": "coc_small",
    "pointmlp": "pointmlp",
    "pointmlp_elite": "pointmlp_elite",
    "pointmlp_coc": "pointmlp_coc",
    "clue_mini_cifar_32": "cluenet_micro_cifar",
    "clue_mini_224": "cluenet_micro",
}
TRAIN = ["pointmlp", "pointmlp_elite", "pointmlp_coc"]


def fill_module():
    spec = importlib.util.spec_from_file_location("official_fill", FIXTURES / "fill.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fixture(name):
    fx = torch.load(FIXTURES / f"{name}.pt", weights_only=True)
    return fx, fill_module().fill_state_dict(fx["manifest"], fx["seed"])


def library_input(fx):
    """Images stay NCHW; points [B, 3, N] (channels first) -> [B, N, 3]."""
    inp = fx["input"]
    return inp.transpose(1, 2) if inp.dim() == 3 else inp


def rel_diff(out, ref):
    return float((out - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("name", list(CASES))
def test_eval_logits_match_official(name):
    fx, sd = fixture(name)
    model = load_official(CASES[name], sd)
    assert not model.training
    with torch.no_grad():
        out = model(library_input(fx))
    # CLUENet: pointctx computes the attention in float32, the official code in float16; the
    # fixture's float64 run without the float16 casts is the reference (see its README)
    ref = fx.get("logits_eval_float64_nohalf", fx["logits_eval"]).to(out.dtype)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


@pytest.mark.parametrize("name", TRAIN)
def test_train_logits_match_official_in_float64(name):
    fx, sd = fixture(name)
    model = load_official(CASES[name], sd).double().train()
    for mod in model.modules():  # the fixtures switch every Dropout to eval
        if isinstance(mod, torch.nn.Dropout):
            mod.eval()
    with torch.no_grad():
        out = model(library_input(fx).double())
    ref = fx["logits_train_float64"]
    torch.testing.assert_close(out, ref, rtol=1e-8, atol=1e-8 * float(ref.abs().max()))


def test_coc_224_needs_the_adaptive_windows():
    """At 224 the official 2x2 windows of 7x7 regions overlap: the partition is not the model."""
    fx, sd = fixture("coc_tiny_224")
    exact = load_official("coc_tiny", sd)
    part = load_official("coc_tiny", sd, windows="partition")
    assert exact.windows == "adaptive"
    with torch.no_grad():
        ref = fx["logits_eval"]
        assert rel_diff(exact(fx["input"]), ref) < 1e-5
        assert rel_diff(part(fx["input"]), ref) > 1e-2
    # at 256 the regions are 8x8 and both modes are the official model
    fx, sd = fixture("coc_tiny_256")
    part = load_official("coc_tiny", sd, windows="partition")
    with torch.no_grad():
        assert rel_diff(part(fx["input"]), fx["logits_eval"]) < 1e-5


def test_position_channels_are_swapped_by_the_conversion():
    """Official stems see [image, row, col]; pointctx appends (x = col, y = row)."""
    fx, sd = fixture("coc_tiny_256")
    conv = convert_official("coc_tiny", sd)
    w_off = sd["patch_embed.proj.weight"]  # [32, 5, 4, 4]
    w_new = conv["reducers.0.proj.weight"].view(32, 5, 4, 4)
    assert torch.equal(w_new[:, :3], w_off[:, :3])
    assert torch.equal(w_new[:, 3], w_off[:, 4]) and torch.equal(w_new[:, 4], w_off[:, 3])
    # the stem on a full image equals the official strided conv on [image, row, col]
    model = create_model("coc_tiny", num_classes=1000)
    model.load_state_dict(conv)
    img = fx["input"][:1]
    h, w = img.shape[-2:]
    rows = torch.arange(h, dtype=img.dtype).view(1, 1, h, 1).expand(1, 1, h, w) / (h - 1) - 0.5
    cols = torch.arange(w, dtype=img.dtype).view(1, 1, 1, w).expand(1, 1, h, w) / (w - 1) - 0.5
    ref = torch.nn.functional.conv2d(torch.cat([img, rows, cols], 1), w_off,
                                     sd["patch_embed.proj.bias"], stride=4)
    packed = model.pack(img)
    feats = torch.cat([packed.x, packed.pos.to(packed.x.dtype)], 1)
    red = model.reducers[0](feats, packed.plane, packed.batch, 1, packed.coords, packed.grid_size)
    got = red.x.view(h // 4, w // 4, 32).permute(2, 0, 1)
    torch.testing.assert_close(got, ref[0], rtol=1e-5, atol=1e-5)
    # loading the unswapped weight changes the logits
    conv["reducers.0.proj.weight"] = w_off.reshape(32, -1)
    model.load_state_dict(conv)
    with torch.no_grad():
        assert rel_diff(model.eval()(fx["input"]), fx["logits_eval"]) > 1e-3


def test_fps_start_is_set_by_the_conversion():
    fx, sd = fixture("pointmlp_elite")
    model = load_official("pointmlp_elite", sd)
    assert model.fps_start == "first"
    # another start is another model: the caller may still ask for one
    other = load_official("pointmlp_elite", sd, fps_start="canonical")
    assert other.fps_start == "canonical"
    with torch.no_grad():
        ref = fx["logits_eval"]
        assert rel_diff(model(library_input(fx)), ref) < 1e-4
        assert rel_diff(other(library_input(fx)), ref) > 1e-3


def test_checkpoint_wrappers_and_prefixes(tmp_path):
    fx, sd = fixture("pointmlp_elite")
    ref = load_official("pointmlp_elite", sd)
    module = {f"module.{k}": v for k, v in sd.items()}
    wrapped = [
        {"net": module, "epoch": 299, "acc": 84.1},  # PointMLP's save_model
        {"model": sd},
        {"state_dict": module, "epoch": 3},  # timm / CoC
        {"checkpoint": 1, "model": {"state_dict": sd}},
    ]
    for obj in wrapped:
        model = load_official("pointmlp_elite", obj)
        for a, b in zip(model.state_dict().values(), ref.state_dict().values()):
            assert torch.equal(a, b)
    path = tmp_path / "best_checkpoint.pth"
    torch.save(wrapped[0], path)
    model = pointctx.load_official("pointmlp_elite", str(path))
    x = library_input(fx)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
    conv = convert_official("pointmlp_elite", path)
    assert set(conv) == set(ref.state_dict())


def test_unknown_missing_and_wrong_keys_are_listed():
    _, sd = fixture("pointmlp_elite")
    extra = dict(sd, **{"foo.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"unknown keys for this architecture \(1\): foo.weight$"):
        load_official("pointmlp_elite", extra)
    missing = {k: v for k, v in sd.items() if not k.startswith("classifier.4.")}
    with pytest.raises(ValueError, match=r"missing keys \(2\): classifier.4.weight, "
                       r"classifier.4.bias$"):
        convert_official("pointmlp_elite", missing)
    with pytest.raises(ValueError, match="missing keys") as err:  # full model vs elite layout
        convert_official("pointmlp", sd)
    assert len(str(err.value)) < 3000 and "more" in str(err.value)
    with pytest.raises(ValueError, match="not an official 'coc_tiny' state_dict"):
        convert_official("coc_tiny", sd)
    with pytest.raises(ValueError, match="`arch` must be one of"):
        load_official("resnet50", sd)
    with pytest.raises(ValueError, match="no state_dict found"):
        load_official("pointmlp_elite", {"epoch": 3, "optimizer": {"lr": 0.1}})
    with pytest.raises(TypeError, match="checkpoint path or a state_dict"):
        load_official("pointmlp_elite", 3)


def test_damaged_files_are_named(tmp_path):
    _, sd = fixture("pointmlp_elite")
    torch.save(sd, tmp_path / "ok.pth")
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pth").write_text("not a checkpoint")
    for name in ("cut.pth", "text.pth"):
        with pytest.raises(ValueError, match=rf"{name} is damaged or not a checkpoint") as err:
            load_official("pointmlp_elite", tmp_path / name)
        assert "weights_only=False" not in str(err.value)
    with pytest.raises(FileNotFoundError, match=r"missing.pth does not exist"):
        load_official("pointmlp_elite", tmp_path / "missing.pth")


@pytest.mark.parametrize("arch", ["coc_tiny_plain", "coc_medium", "cluenet_tiny", "cluenet_small",
                                  "cluenet_base", "cluenet_micro"])
def test_layout_only_archs_convert_key_by_key(arch):
    """Archs without an output fixture: an official-layout state_dict, built from the pointctx
    keys by the inverse renaming of the official classes, converts back exactly."""
    fam = "coc" if arch.startswith("coc") else "clue"
    donor = "coc_tiny_224" if fam == "coc" else "clue_mini_224"
    fx, _ = fixture(donor)
    model = create_model(arch, num_classes=7)
    official = _official_layout(fam, model)
    conv = convert_official(arch, official)
    assert set(conv) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert conv[k].shape == v.shape, k


def _official_layout(fam, model):
    """The official key layout of a pointctx CoC / CLUENet model (inverse of the converter)."""
    import re

    out = {}
    for k, v in model.state_dict().items():
        m = re.fullmatch(r"stages\.(\d+)\.(\d+)\.(.+)", k)
        if fam == "coc":
            if k == "reducers.0.proj.weight":
                out["patch_embed.proj.weight"] = v.view(v.shape[0], -1, 4, 4)
            elif k == "reducers.0.proj.bias":
                out["patch_embed.proj.bias"] = v
            elif k.startswith("reducers."):
                i, rest = k.split(".")[1], k.split(".", 2)[2]
                out[f"network.{2 * int(i) - 1}.{rest}"] = (v.view(v.shape[0], -1, 3, 3)
                                                           if rest.endswith("weight") else v)
            elif m:
                rest = (m.group(3).replace("layer_scale_1.gamma", "layer_scale_1")
                        .replace("layer_scale_2.gamma", "layer_scale_2")
                        .replace("token_mixer.alpha", "token_mixer.sim_alpha")
                        .replace("token_mixer.beta", "token_mixer.sim_beta"))
                if re.search(r"token_mixer\.(f|v|proj)\.weight", rest):
                    v = v[..., None, None]
                out[f"network.{2 * int(m.group(1))}.{m.group(2)}.{rest}"] = v
            else:
                out[k] = v
            continue
        m = re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)", k)
        p = re.fullmatch(r"pools\.(\d+)\.(.+)", k)
        if k.startswith("stem.proj."):
            out[k.replace("stem.", "patch_embed.")] = v.view(v.shape[0], 5, -1) if v.dim() == 2 \
                else v
        elif k.startswith("stem_norm."):
            out[k.replace("stem_norm.", "patch_embed.norm.")] = v
        elif k.startswith("pos_embed."):
            out[k.replace("pos_embed.", "pos_embed.proj.0.")] = v
        elif m:
            rest = m.group(3)
            for a, b in (("token_mixer.t", "token_mixer.attn_alpha"),
                         ("token_mixer.alpha", "token_mixer.sim_alpha"),
                         ("token_mixer.beta", "token_mixer.sim_beta"),
                         ("token_mixer.gate.w1", "token_mixer.gate.fc1.weight"),
                         ("token_mixer.gate.b1", "token_mixer.gate.fc1.bias"),
                         ("token_mixer.gate.w2", "token_mixer.gate.fc2.weight"),
                         ("token_mixer.gate.b2", "token_mixer.gate.fc2.bias"),
                         ("mlp.dwconv.", "mlp.dwconv.dwconv.")):
                if rest == a or (a.endswith(".") and rest.startswith(a)):
                    rest = b + rest[len(a):]
                    break
            if rest == "token_mixer.attn_alpha":
                v = v.double()
            out[f"network.{2 * int(m.group(1))}.blocks.{m.group(2)}.{rest}"] = v
        elif p:
            rest = p.group(2)
            for a, b in (("skip.proj.", "conv_skip."), ("f.", "conv_f."), ("fc1.", "conv_v.0."),
                         ("fc2.", "conv_v.2.")):
                if rest.startswith(a):
                    rest = b + rest[len(a):]
                    break
            out[f"network.{2 * int(p.group(1)) + 1}.{rest}"] = v
        else:
            out[k] = v
    return out


def test_official_archs_are_registered_models():
    for arch in official_archs():
        assert arch in pointctx.list_models()


# ----------------------------------------------------------------------------------------------
# part segmentation: outputs of the official part_segmentation/model/pointMLP.py, written by
# tests/models/data/make_official_pointmlp_partseg.py (its docstring says how)
# ----------------------------------------------------------------------------------------------

PARTSEG = Path(__file__).resolve().parent / "data" / "official_pointmlp_partseg.pt"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_partseg_matches_official(dtype):
    fx = torch.load(PARTSEG, weights_only=True)
    sd = fill_module().fill_state_dict(fx["manifest"], fx["seed"])
    model = load_official("pointmlp_partseg", sd).to(dtype)
    assert model.backbone.fps_start == "first" and model.num_classes == 50
    xyz, normal = fx["xyz"].transpose(1, 2), fx["normal"].transpose(1, 2)  # [B, N, 3]
    with torch.no_grad():
        out = model(xyz.to(dtype), category=fx["cls_label"].to(dtype), features=normal.to(dtype))
    got = torch.log_softmax(out, -1)[:, fx["kept_points"]]  # the official output
    ref = fx["log_probs_eval" if dtype == torch.float32 else "log_probs_eval_float64"]
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol * float(ref.abs().max()))
    # the converted state_dict is the official layout, key by key
    conv = convert_official("pointmlp_partseg", sd)
    assert len(conv) == len(sd) == len(model.state_dict())
