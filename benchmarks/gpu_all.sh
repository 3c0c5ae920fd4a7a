#!/usr/bin/env bash
# The one prepared GPU check: the summary kernel alone (gpu_profile.py --launch-shapes), prefill
# timings (gpu_trace.py), generation timings (gpu_generate.py),
# a traced tiny generation through the CLI on CUDA, read back with the log loader, and last where
# the traced prefill's time goes (gpu_host.py). The CLI needs the llama-models wheel (its tokenizer file).
# Results go to $OUT (or ./gpu-results). Run from the repository root on a CUDA machine.
set -uo pipefail
out="${OUT:-gpu-results}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else \"no cuda\")" | tee "$out/env.txt"
baseline=()  # an older tracer copy to time side by side, where one is unpacked in .gpu_baseline/tracer
[ -d .gpu_baseline/tracer ] && baseline=(--baseline .gpu_baseline)
# The fused kernels' direct launch, checked alone first (a fault there would end the process):
# where it fails, the benchmark scripts below launch through Triton's own launcher (FUSED_DIRECT=0;
# the CLI run at the end does not read it).
timeout 120 python3 -c "import sys, torch; sys.path.insert(0, 'benchmarks'); from gpu_trace import probe_fused; r = probe_fused(torch.device('cuda')); print('fused probe:', r); sys.exit(r != 'ok')" \
  || export FUSED_DIRECT=0
timeout 150 python3 benchmarks/gpu_profile.py --launch-shapes --kernels-only ${baseline[@]+"${baseline[@]}"} > "$out/gpu_kernels.txt"; echo "gpu_kernels rc=$?"
cat "$out/gpu_kernels.txt"
timeout 200 python3 benchmarks/gpu_trace.py --repeats 10 ${baseline[@]+"${baseline[@]}"} > "$out/gpu_trace.json"; echo "gpu_trace rc=$?"
cat "$out/gpu_trace.json"
timeout 150 python3 benchmarks/gpu_generate.py --repeats 4 > "$out/gpu_generate.json"; echo "gpu_generate rc=$?"
cat "$out/gpu_generate.json"
timeout 60 python3 -m walkthroughs.cli run --model tiny --device cuda --max-new-tokens 8 --format json -o "$out/tiny_cuda.jsonl"
echo "cli rc=$?"
python3 - "$out/tiny_cuda.jsonl" <<'EOF'
import json, sys
from tracer.log import load_log
header, events, summary = load_log(sys.argv[1])
with_stats = sum(1 for e in events for o in e.get("outputs", []) if "stats" in o)
print(json.dumps({"events": len(events), "outputs_with_stats": with_stats, "device": header["device"],
                  "generated": summary["generated"]}))
EOF
timeout 100 python3 benchmarks/gpu_host.py --repeats 5 > "$out/gpu_host.txt"; echo "gpu_host rc=$?"  # last: the diagnosis, if time is left
head -c 6000 "$out/gpu_host.txt"
