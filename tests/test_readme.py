"""Every python block of README.md runs as written, in order, after `make demo`."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run_after_make_demo(tmp_path, monkeypatch, capsys, load_example,
                                                  tiny_point_run):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 3
    # a tiny run of the same script and options family stands in for `make demo`: it writes
    # runs/sample-pointmlp_coc_elite-<time> in the working directory, as `make demo` does
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:
        assert load_example("scanobjectnn").main([*tiny_point_run.argv, "--epochs", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert len(list(Path("runs").glob("sample-pointmlp_coc_elite-*"))) == 1
    capsys.readouterr()

    torch.manual_seed(0)
    scope: dict = {}

    def run(i):
        exec(compile(blocks[i], f"README.md, python block {i + 1}", "exec"), scope)

    run(0)  # quick start
    assert scope["out"].shape == scope["pb"].x.shape
    assert scope["logits"].shape == (2, 10)
    assert scope["nbr"].index.shape == (scope["idx"].numel(), 16)
    run(1)  # use a trained model
    name, prob = capsys.readouterr().out.split()
    assert name in scope["model"].class_names and 0 < float(prob) <= 1
    assert scope["probs"].shape == (10,)
    run(2)  # segmentation in brief
    kept = int(scope["mask"].sum())
    assert scope["dense"].shape == (2, 11, 60, 80)
    assert scope["at_points"].shape == scope["pooled"].shape == (kept, 11)
    assert scope["at_query"].shape == (2 * 60 * 80, 11)
