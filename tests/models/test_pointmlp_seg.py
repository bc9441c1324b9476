import copy

import pytest
import torch

from pointctx import PointBatch, create_model, list_models
from pointctx.models import SetSegmenter
from pointctx.nn.pointmlp_layers import PointMLPHead

PART = ["pointmlp_partseg", "pointmlp_coc_partseg"]
SCENE = ["pointmlp_seg", "pointmlp_coc_seg", "pointmlp_elite_seg", "pointmlp_coc_elite_seg"]
MODELS = PART + SCENE
# small widths so that the per-model tests stay fast; the structure is the registered one
SMALL = dict(embed_dim=8, de_dims=(16, 16, 8, 8), de_blocks=(1, 1, 1, 1), gmp_dim=8,
             cls_dim=8, head_hidden=16, k_neighbors=8)


@pytest.fixture
def make_model(randomize_bn):
    """``make_model(name, seed=0, small=True, **kw)``: a seeded model with random BN stats."""
    def make(name, seed=0, small=True, **kw):
        torch.manual_seed(seed)
        args = dict(SMALL) if small else {}
        args.update(kw)
        m = create_model(name, **args)
        randomize_bn(m)
        return m
    return make


def _inputs(name, sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = [torch.randn(n, 3, generator=g) for n in sizes]
    if name in PART:
        x = [torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1) for n in sizes]
        cat = torch.randint(0, 16, (len(sizes),), generator=g)
        return PointBatch.from_list(pos, x), cat
    return PointBatch.from_list(pos), None


def test_registered():
    assert set(MODELS) <= set(list_models())
    assert set(list_models(module="pointmlp_seg")) == {*MODELS, "pointmlp_elite_unet_seg"}
    m = create_model("pointmlp_partseg")
    assert isinstance(m, SetSegmenter) and isinstance(m.head, PointMLPHead)


def test_partseg_parameter_count_matches_official(num_params):
    # official part_segmentation/model/pointMLP.py, pointMLP(50): 16,755,594 parameters
    n = num_params(create_model("pointmlp_partseg", num_classes=50))
    assert abs(n / 16_755_594 - 1) < 0.01, n
    assert n == 16_755_594


def test_coc_adds_one_group_context_cluster_per_pre_block(num_params):
    base = create_model("pointmlp_partseg")
    coc = create_model("pointmlp_coc_partseg")
    extra = 0
    for c in (128, 256, 512, 1024):  # stage widths, two pre-extraction blocks each
        hd = max(c // 4, 32)
        extra += 2 * (2 * (c * hd + hd) + hd * c + c + 2)
    assert num_params(coc) - num_params(base) == extra


def test_official_state_dict_layout():
    keys = set(create_model("pointmlp_partseg").state_dict())
    for k in ("backbone.embedding.linear.weight", "backbone.affines.0.alpha",
              "backbone.pre.3.transfer.linear.weight",
              "backbone.pre.0.blocks.1.net2.norm.running_var",
              "backbone.post.2.1.net1.linear.bias",
              "decode_list.0.fuse.linear.weight",
              "decode_list.3.extraction.operation.3.net2.norm.weight",
              "gmp_map_list.4.linear.weight", "gmp_map_end.linear.weight",
              "cls_map.0.linear.weight", "cls_map.1.norm.bias",
              "classifier.0.weight",
              "classifier.1.running_mean", "classifier.3.weight"):
        assert k in keys, k
    m = create_model("pointmlp_partseg")
    assert m.head.decode_list[0].fuse.linear.in_features == 1024 + 512
    assert m.head.decode_list[3].fuse.linear.in_features == 128 + 64
    assert m.head.classifier[0].in_features == 64 + 64 + 128
    assert m.backbone.embedding.linear.in_features == 6


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_every_parameter_gets_a_gradient(name, make_model):
    model = make_model(name)
    pb, cat = _inputs(name, [160, 90, 7])
    out = model(pb, category=cat)
    assert out.shape == (pb.num_points, model.num_classes)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(float(p.grad.abs().sum()) > 0 for n, p in model.named_parameters()
               if "norm" not in n), "a parameter got an all-zero gradient"


@pytest.mark.parametrize("name", ["pointmlp_partseg", "pointmlp_coc_seg"])
def test_registered_widths_forward(name, make_model):
    model = make_model(name, small=False).eval()
    pb, cat = _inputs(name, [300, 64])
    with torch.no_grad():
        out = model(pb, category=cat)
    assert out.shape == (364, model.num_classes) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_per_point_output_is_permutation_equivariant(name, make_model):
    model = make_model(name, fps_start="canonical").eval()
    pb, cat = _inputs(name, [200, 61], seed=3)
    perm = torch.cat([torch.randperm(200), 200 + torch.randperm(61)])
    shuffled = PointBatch(pb.pos[perm], None if pb.x is None else pb.x[perm], ptr=pb.ptr)
    with torch.no_grad():
        out = model(pb, category=cat)
        out_p = model(shuffled, category=cat)
    torch.testing.assert_close(out_p, out[perm], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_same_alone_as_in_a_batch(name, make_model):
    model = make_model(name).eval()
    sizes = [150, 70, 20, 3]
    pb, cat = _inputs(name, sizes, seed=1)
    with torch.no_grad():
        full = model(pb, category=cat)
        for i, chunk in enumerate(full.split(sizes)):
            alone = model(pb.select([i]), category=None if cat is None else cat[i:i + 1])
            torch.testing.assert_close(alone, chunk, rtol=1e-4, atol=1e-5)


def test_padded_input_with_lengths_equals_point_batch(make_model):
    model = make_model("pointmlp_partseg").eval()
    pb, cat = _inputs("pointmlp_partseg", [120, 50])
    pad = pb.to_padded()
    xpad = PointBatch(pb.x, None, ptr=pb.ptr).to_padded().pos
    with torch.no_grad():
        ref = model(pb, category=cat)
        out = model(pad.pos, category=cat, lengths=pad.lengths, features=xpad)
    assert out.shape == (2, 120, 50)
    torch.testing.assert_close(out[0], ref[:120])
    torch.testing.assert_close(out[1, :50], ref[120:])
    assert float(out[1, 50:].abs().sum()) == 0


def test_category_ids_and_one_hot_agree_and_matter(make_model):
    model = make_model("pointmlp_coc_partseg").eval()
    pb, _ = _inputs("pointmlp_coc_partseg", [80, 40])
    ids = torch.tensor([2, 11])
    with torch.no_grad():
        a = model(pb, category=ids)
        b = model(pb, category=torch.nn.functional.one_hot(ids, 16).float())
        c = model(pb, category=torch.tensor([3, 11]))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a[:80], c[:80])
    torch.testing.assert_close(a[80:], c[80:])


def test_query_at_the_input_points_equals_plain_output_and_other_positions_work(make_model):
    model = make_model("pointmlp_elite_seg").eval()
    pb, _ = _inputs("pointmlp_elite_seg", [100, 60])
    with torch.no_grad():
        plain = model(pb)
        queried = model(pb, query=PointBatch(pb.pos, None, ptr=pb.ptr))
        q = PointBatch.from_list([torch.randn(7, 3), torch.randn(3, 3)])
        other = model(pb, query=q)
    torch.testing.assert_close(queried, plain, rtol=1e-4, atol=1e-5)
    assert other.shape == (10, model.num_classes)


def test_xyz_only_part_model(make_model):
    model = make_model("pointmlp_partseg", in_channels=0).eval()
    pb = PointBatch.from_list([torch.randn(64, 3)])
    with torch.no_grad():
        assert model(pb, category=torch.tensor([0])).shape == (64, 50)
    assert model.backbone.embedding.linear.in_features == 3


def test_errors(make_model):
    part = make_model("pointmlp_partseg")
    scene = make_model("pointmlp_seg")
    pb, cat = _inputs("pointmlp_partseg", [30, 20])
    with pytest.raises(ValueError, match="`category` is required"):
        part(pb)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 15\]"):
        part(pb, category=torch.tensor([0, 16]))
    with pytest.raises(ValueError, match="must have B = 2 entries"):
        part(pb, category=torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\[B, num_categories\]"):
        part(pb, category=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="in_channels = 3 feature channels, got 0"):
        part(PointBatch.from_list([torch.randn(5, 3)] * 2), category=torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="`mask` is only for image tensor inputs"):
        part(pb, cat)  # category is a keyword argument
    with pytest.raises(ValueError, match=r"head \(SemanticFPNHead\) takes no category"):
        create_model("coc_micro_seg")(torch.rand(1, 3, 16, 16), category=torch.tensor([0]))
    with pytest.raises(ValueError, match="no category input"):
        scene(PointBatch.from_list([torch.randn(5, 3)]), category=torch.tensor([0]))
    with pytest.raises(TypeError, match="image tensor .* or a PointBatch"):
        scene([1, 2, 3])
    with pytest.raises(ValueError, match="empty sets"):
        scene(PointBatch.from_list([torch.randn(5, 3), torch.zeros(0, 3)]))
    with pytest.raises(ValueError, match="must hold the input's B = 2 sets"):
        scene(PointBatch.from_list([torch.randn(5, 3), torch.randn(4, 3)]),
              query=PointBatch.from_list([torch.randn(5, 3)]))
    with pytest.raises(ValueError, match="at least 2 sets"):
        scene(PointBatch.from_list([torch.randn(5, 3)]))
    with pytest.raises(ValueError, match="one entry per encoder stage"):
        create_model("pointmlp_seg", de_dims=(8, 8))
    with pytest.raises(ValueError, match="`coc_mode` must be None or 'group'"):
        create_model("pointmlp_seg", coc_mode="set")


def test_forward_stages_follow_the_backbone_contract(make_model):
    model = make_model("pointmlp_elite_seg").eval()
    pb, _ = _inputs("pointmlp_elite_seg", [130, 33])
    with torch.no_grad():
        stages = model.backbone.forward_stages(pb)
    assert [s.x.shape[1] for s in stages] == list(model.backbone.embed_dims)
    assert [s.num_points for s in stages] == [163, 33 + 9, 9 + 3, 3 + 1, 1 + 1]  # ceil(n / 4)
    assert all(hasattr(s, "link") for s in stages)


def test_flat_head_follows_the_segmenter():
    m = create_model("pointmlp_elite_seg", num_classes=3)
    assert "head" not in dict(m.named_children())
    assert m.head.classifier is m.classifier
    m.eval()
    assert not m.head.training and not m.classifier.training
    c = copy.deepcopy(m).double()
    assert c.head.classifier is c.classifier and c.classifier[0].weight.dtype == torch.float64
    m.load_state_dict(c.float().state_dict())
