#!/usr/bin/env bash
# GPU check of pointctx, in one go (under 8 minutes on one GPU): `make gpu-check`.
#
#   bench/gpu_check.sh [--dry-run] [--out DIR] [--steps tests,train,ops,pointmlp,coc]
#
# Steps (each with its own time limit; a failing step is recorded and the next one runs):
#   1. tests      the CUDA-only tests (pytest -k cuda: ops vs CPU, whole models vs CPU, autocast, batch round trip)
#   2. train      examples/scanobjectnn.py --sample --device cuda --amp auto, 2 epochs
#   3. ops        bench/ops.py --device cuda --quick (native vs torch-cluster when installed)
#   4. pointmlp   bench/pointmlp.py --device cuda --quick (PointMLP family throughput)
#   5. coc        bench/models.py --device cuda --models coc_tiny --sizes 224 (throughput, memory)
# and writes DIR/gpu_check.json: versions (python, torch, CUDA, GPU, torch-cluster, pointctx
# commit), every step's command, exit status, seconds and log, and the bench JSONs it produced.
#
# Needs: a python with torch (CUDA build) -- $PYTHON, else .venv/bin/python, else python3.
# Never installs torch. pointctx is used from this checkout (PYTHONPATH); when it is not
# importable it is installed with `pip install --no-deps -e .`, and pointctx's small
# dependencies (numpy, h5py, tqdm, pytest) are pip-installed only when missing.
#
# --dry-run: the same plumbing on CPU with tiny sizes (seconds per step, no installs); the default
# test suite runs two steps of it (tests/test_gpu_check.py; all steps in the slow test).
# --steps: run only these steps (comma-separated). Default DIR: runs/gpu_check (dry run:
# runs/gpu_check_dry).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DRY=0
OUT=""
SELECT="tests,train,ops,pointmlp,coc"
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --out) OUT="$2"; shift ;;
        --steps) SELECT="$2"; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1' (use --dry-run, --out DIR, --steps LIST)" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$OUT" ]; then
    if [ "$DRY" = 1 ]; then OUT="runs/gpu_check_dry"; else OUT="runs/gpu_check"; fi
fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
else PY="python3"; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"

if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "gpu_check.sh: '$PY' cannot import torch; install a CUDA torch first (this script never installs torch)" >&2
    exit 2
fi
if [ "$DRY" = 1 ]; then
    DEVICE=cpu
else
    DEVICE=cuda
    if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "gpu_check.sh: torch.cuda.is_available() is False with '$PY' (use --dry-run on CPU)" >&2
        exit 2
    fi
    # only what is missing, never torch
    missing=""
    for mod in numpy h5py tqdm pytest; do
        "$PY" -c "import $mod" 2>/dev/null || missing="$missing $mod"
    done
    if [ -n "$missing" ]; then
        echo "[gpu_check] pip install$missing"
        "$PY" -m pip install -q $missing || echo "[gpu_check] WARNING: could not install$missing"
    fi
    if ! "$PY" -c "import pointctx" 2>/dev/null; then
        "$PY" -m pip install -q --no-deps --no-build-isolation -e . \
            || echo "[gpu_check] WARNING: pip install -e . failed; using PYTHONPATH=$ROOT"
    fi
fi

STEPS="$OUT/steps.tsv"
: > "$STEPS"
run_step() {  # name timeout_s command...
    local name="$1" limit="$2"
    shift 2
    case ",$SELECT," in *",$name,"*) ;; *) return 0 ;; esac
    local log="$OUT/$name.log" t0 t1 rc
    echo "[gpu_check] $name: $*"
    t0=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b - a}')" "$log" "$*" >> "$STEPS"
    echo "[gpu_check] $name: exit $rc ($(tail -n 1 "$log" | cut -c1-120))"
}

if [ "$DRY" = 1 ]; then
    run_step tests 120 "$PY" -m pytest -q -p no:cacheprovider -k cuda \
        tests/ops/test_grid.py tests/test_batch.py
    run_step train 180 "$PY" examples/scanobjectnn.py --sample --device cpu --amp auto \
        --epochs 1 --stop-after-steps 2 --batch-size 4 --num-points 64 --no-progress \
        --output "$OUT/train"
    run_step ops 120 "$PY" bench/ops.py --device cpu --quick --repeats 1 --no-naive \
        --out "$OUT/ops.json"
    run_step pointmlp 120 "$PY" bench/pointmlp.py --device cpu --quick --models pointmlp_elite \
        --batch 2 --points 128 --out "$OUT/pointmlp.json"
    run_step coc 180 "$PY" bench/models.py --device cpu --quick --models coc_tiny --sizes 32 \
        --batch 2 --iters 1 --no-progress --out "$OUT/models.json"
else
    run_step tests 90 "$PY" -m pytest -q -p no:cacheprovider -k cuda
    run_step train 150 "$PY" examples/scanobjectnn.py --sample --device cuda --amp auto \
        --epochs 2 --threads 4 --no-progress --output "$OUT/train"
    run_step ops 90 "$PY" bench/ops.py --device cuda --quick --out "$OUT/ops.json"
    run_step pointmlp 60 "$PY" bench/pointmlp.py --device cuda --out "$OUT/pointmlp.json"
    run_step coc 60 "$PY" bench/models.py --device cuda --models coc_tiny --sizes 224 \
        --batch 64 --no-progress --out "$OUT/models.json"
fi

"$PY" - "$OUT" "$DEVICE" "$DRY" <<'EOF'
import json, os, platform, subprocess, sys
out, device, dry = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
import torch
def ver(mod):
    try:
        m = __import__(mod)
        return getattr(m, "__version__", "present")
    except Exception as e:  # noqa: BLE001
        return f"not importable ({type(e).__name__})"
try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip() or None
except OSError:
    commit = None
cuda = torch.cuda.is_available()
steps = []
with open(os.path.join(out, "steps.tsv")) as f:
    for line in f:
        name, rc, secs, log, cmd = line.rstrip("\n").split("\t")
        steps.append({"step": name, "exit": int(rc), "seconds": round(float(secs), 2),
                      "log": log, "command": cmd})
results = {}
for name in ("ops", "pointmlp", "models"):
    path = os.path.join(out, f"{name}.json")
    if os.path.exists(path):
        with open(path) as f:
            results[name] = json.load(f)
train = os.path.join(out, "train")
if os.path.isdir(train):
    for fn in ("results.json",):
        if os.path.exists(os.path.join(train, fn)):
            with open(os.path.join(train, fn)) as f:
                results["train"] = json.load(f)
            break
report = {
    "check": "gpu_check",
    "dry_run": dry,
    "device": device,
    "versions": {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "torch_cluster": ver("torch_cluster"),
        "pointctx": ver("pointctx"),
        "pointctx_commit": commit,
    },
    "steps": steps,
    "all_passed": all(s["exit"] == 0 for s in steps),
    "results": results,
}
tmp = os.path.join(out, "gpu_check.json.tmp")
with open(tmp, "w") as f:
    json.dump(report, f, indent=1)
os.replace(tmp, os.path.join(out, "gpu_check.json"))
print(f"[gpu_check] wrote {os.path.join(out, 'gpu_check.json')}: "
      + ", ".join(f"{s['step']}={s['exit']}" for s in steps))
sys.exit(0 if report["all_passed"] else 1)
EOF
