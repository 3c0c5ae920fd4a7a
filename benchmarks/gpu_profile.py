"""Where does tracing time go on the GPU? torch.profiler over one traced prefill (with value
summaries) of 11B-Instruct, random bf16 weights. Prints the top host and device costs.

    python benchmarks/gpu_profile.py
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from benchmarks_common import VISION_MASK, noise_image, prompt_tokens  # noqa: E402
from model import build_model, get_preset  # noqa: E402
from tracer import trace  # noqa: E402
from walkthroughs.catalog import stage_rules, wrapped_functions  # noqa: E402


def main() -> None:
    dev = torch.device("cuda")
    args = get_preset("11b-instruct")
    model = build_model(args, device=dev, dtype=torch.bfloat16, seed=0)
    image, T = noise_image(), args.max_seq_len
    tokens, n = prompt_tokens(T, dev)

    @torch.no_grad()
    def prefill():
        caches, xmask, rmask = model.compute_vision_tokens_masks([[image]], [VISION_MASK], T, dev)
        out = model(torch.arange(0, n, device=dev), tokens, xmask, rmask, caches)
        torch.cuda.synchronize()
        return out

    def traced(values):
        with trace(model, values_summary=values, functions=wrapped_functions(), stage_rules=stage_rules(), timing=False):
            prefill()

    for _ in range(3):
        prefill(), traced(True), traced(False)
    for label, fn in (("untraced", prefill), ("shapes only", lambda: traced(False)), ("with values", lambda: traced(True))):
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
        print(f"===== {label}: {dt * 1000:.1f} ms")
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=50))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=50))


if __name__ == "__main__":
    main()
