#!/usr/bin/env bash
# The GPU checks, in one call on a lent GPU machine:
#   the test suite with the device forced to CUDA (parity with the NumPy oracle in IEEE float32),
#   a TF32 vs IEEE comparison, and the benchmark on the card. Logs go to $OUT (device tool) or
#   bench/out. Python 3.12 there lacks the web stack: carry wheels in .whl (see the device README).
set -uo pipefail
out=${OUT:-bench/out}
mkdir -p "$out"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
nvidia-smi 2>&1 | tee "$out/nvidia-smi.txt"
export RNN_SERVE_TEST_DEVICE=cuda RNN_SERVE_DEVICE=cuda PYTHONUNBUFFERED=1
python3 -m pytest -q -p no:cacheprovider tests/unit tests/api 2>&1 | tee "$out/pytest-cuda.log"
python3 - <<'PY' 2>&1 | tee "$out/tf32.log"
import numpy as np, torch
from tests.oracle import forward, seeded_params, torch_module
x = np.random.default_rng(0).standard_normal((50, 32, 64)).astype(np.float32)
for mode in ("RNN", "LSTM", "GRU"):
    cfg = {"mode": mode, "input_size": 64, "hidden_size": 128, "num_layers": 2}
    want = forward(seeded_params(cfg), cfg, x)[0]
    for precision in ("ieee", "tf32"):
        torch.backends.cudnn.rnn.fp32_precision = precision
        rnn = torch_module(cfg).cuda().eval()
        rnn.flatten_parameters()
        with torch.inference_mode():
            got = rnn(torch.from_numpy(x).cuda())[0].cpu().numpy()
        print(mode, precision, "max |err| vs float64 oracle:", float(np.abs(got - want).max()))
PY
BENCH_SECONDS=5 python3 -m bench.run 2>&1 | tee "$out/bench.log"
cp bench/REPORT.md "$out/REPORT-gpu.md" 2>/dev/null || true
