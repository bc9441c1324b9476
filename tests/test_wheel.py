"""`pip install .` builds a wheel of the package alone that works outside the checkout."""

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

USE = textwrap.dedent("""
    import os, sys
    import torch, pointctx
    from pointctx.datasets import ModelNet40
    checkout, root = sys.argv[1], sys.argv[2]
    assert not pointctx.__file__.startswith(checkout), pointctx.__file__
    model = pointctx.create_model("coc_tiny_cifar", num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert len(ModelNet40(root, num_points=16)) == 3
    try:
        ModelNet40(num_points=16)
    except FileNotFoundError as err:
        print("NO-ROOT:", err)
    os.environ["POINTCTX_DATA"] = root
    assert len(ModelNet40(num_points=16)) == 3
    print("OK", pointctx.__file__)
""")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "pointctx", src / "pointctx",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "--no-cache-dir", "-w", str(out), str(src)],
                   check=True, capture_output=True)
    (whl,) = out.glob("pointctx-*.whl")
    return whl


def test_wheel_holds_the_package_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"pointctx", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                    + ".dist-info"}, tops
    assert "pointctx/__init__.py" in names
    assert "pointctx/models/coc.py" in names
    assert not [n for n in names if n.endswith((".npz", ".png", ".pt", ".h5", ".pyc"))]


def test_wheel_works_in_a_fresh_venv_outside_the_checkout(wheel, tmp_path):
    env = tmp_path / "venv"
    venv.create(env, with_pip=False)
    py = env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip()
    # torch and the core dependencies come from this environment (no download); the editable
    # pointctx of the checkout does not, since .pth files of that folder are not processed
    deps = {str(Path(torch.__file__).parents[1]), str(Path(np.__file__).parents[1]),
            sysconfig.get_paths()["purelib"]}
    Path(purelib, "_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)

    root = tmp_path / "data"
    root.mkdir()
    rng = np.random.default_rng(0)
    np.savez(root / "modelnet40_train_1024.npz", points=rng.random((3, 1024, 3), np.float32),
             labels=np.array([0, 1, 0]), classes=np.array(["airplane", "bed"]))
    work = tmp_path / "elsewhere"
    work.mkdir()
    envvars = {k: v for k, v in os.environ.items() if k not in ("POINTCTX_DATA", "PYTHONPATH")}
    res = subprocess.run([str(py), "-c", USE, str(ROOT), str(root)], cwd=work, env=envvars,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"OK {purelib}" in res.stdout
    no_root = res.stdout.split("NO-ROOT:", 1)[1].splitlines()[0]
    assert "root=" in no_root and "POINTCTX_DATA" in no_root
