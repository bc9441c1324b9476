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
