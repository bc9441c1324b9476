"""The README's quick-start code block runs as written."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_quick_start_runs():
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python code block"
    torch.manual_seed(0)
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)  # noqa: S102 - our own README
    assert scope["out"].shape == scope["pb"].x.shape
    assert scope["logits"].shape == (2, 10)
    assert scope["nbr"].index.shape == (scope["idx"].numel(), 16)


def test_readme_use_a_trained_model_runs(tmp_path, monkeypatch, capsys, load_example,
                                         tiny_point_run):
    """The "Use a trained model" block runs as written on a real (tiny) run in runs/demo."""

    text = README.read_text(encoding="utf-8")
    section = text.split("## Use a trained model", 1)[1]
    block = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    script = load_example("scanobjectnn")
    threads = torch.get_num_threads()
    monkeypatch.chdir(tmp_path)
    try:
        assert script.main([*tiny_point_run.argv, "--epochs", "1", "--output", "runs/demo"]) == 0
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - our own README
    name, prob = capsys.readouterr().out.split()
    assert name in scope["model"].class_names and 0 < float(prob) <= 1
    assert scope["probs"].shape == (10,)


def test_readme_dense_prediction_block_runs():
    text = README.read_text(encoding="utf-8")
    section = text.split("## Dense prediction", 1)[1]
    block = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    scope: dict = {}
    with torch.no_grad():
        exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - our own README
    assert scope["dense"].shape == (2, 11, 60, 80)
    assert scope["at_points"].shape == (int(scope["mask"].sum()), 11)
    assert scope["at_query"].shape == (2 * 60 * 80, 11)
    assert scope["pooled"].shape == scope["at_points"].shape
