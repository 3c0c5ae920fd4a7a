"""Shared by the benchmarks: the GPU scripts' inputs (one 800x600 image, 2x2 tiles, and a 24-token
chat prompt) and their prefill, the CPU scripts' generation, the two empty-hook floors,
interleaved timing and the CPU scripts' two-thread/one-thread table, and loading another copy of
the tracer for an A/B. (The trace's options as the CLI sets them: `walkthroughs.catalog.trace_options`.)"""

import importlib.util
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image

# Chat layout, 24 tokens: BOS, user header, <|image|> (128256 in the model input), 14 text tokens,
# <|eot_id|>, and the start of the assistant header.
PROMPT_IDS = (
    [128000, 128006, 882, 128007, 271, 128256]
    + [3923, 374, 304, 420, 2217, 30, 17855, 433, 304, 832, 11914, 13, 5321, 0]
    + [128009, 128006, 78191, 128007]
)

VISION_MASK = [[5, -1]]  # the <|image|> token at position 5 is seen by every later token
PAD_ID = 128004


def noise_image() -> Image.Image:
    return Image.effect_noise((800, 600), 64).convert("RGB")  # 800x600 -> 2x2 tiles


def prompt_tokens(max_seq_len: int, device) -> tuple[torch.Tensor, int]:
    """PROMPT_IDS padded to the model's max_seq_len: (tokens [1, T], prompt length n)."""
    n = len(PROMPT_IDS)
    tokens = torch.full((1, max_seq_len), PAD_ID, dtype=torch.long)  # [B, T]
    tokens[0, :n] = torch.tensor(PROMPT_IDS)
    return tokens.to(device), n


def honour_fused_direct() -> None:
    """FUSED_DIRECT=0 (set by benchmarks/gpu_all.sh where the fused kernels' direct launch failed
    its probe): launch them through Triton's own launcher only."""
    if os.environ.get("FUSED_DIRECT") == "0":
        from tracer import fused_stats

        fused_stats.DIRECT = False


def prefill_case(preset: str, device):
    """The GPU scripts' model and prefill: `preset` with random bf16 weights (seed 0) on `device`,
    the noise image and the 24-token prompt. Returns (model, prefill): prefill() runs the vision
    half and the text forward, waits for the device, and returns the logits [B, S, K]."""
    from model import build_model, get_preset

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    args = get_preset(preset)
    model = build_model(args, device=dev, dtype=torch.bfloat16, seed=0)
    image, T = noise_image(), args.max_seq_len
    tokens, n = prompt_tokens(T, dev)

    @torch.no_grad()
    def prefill() -> torch.Tensor:
        caches, xmask, rmask = model.compute_vision_tokens_masks([[image]], [VISION_MASK], T, dev)
        logits = model(torch.arange(0, n, device=dev), tokens, xmask, rmask, caches)  # [B, S, K]
        sync()
        return logits

    return model, prefill


def sample_chat(tok, prompt: str):
    """The CPU scripts' model input: the bundled sample image and `prompt` as one user turn."""
    from model import ChatFormat, Message
    from walkthroughs.sample_image import SAMPLE_IMAGE

    return ChatFormat(tok).encode_dialog_prompt([Message("user", [Image.open(SAMPLE_IMAGE).convert("RGB"), prompt])])


def generation_case(args=None, max_gen_len: int = 16):
    """The CPU scripts' model and generation: `args` (the tiny preset by default) with random bf16
    weights (seed 0), the sample image and "Describe it." as a chat prompt. Returns (model,
    generate_ids): generate_ids(marker=None) runs greedy generation of up to `max_gen_len` tokens,
    with `marker` (a trace's `phase`) called at each step, and returns the token ids."""
    from model import build_model, get_preset, get_tokenizer
    from model.generation import generate

    model = build_model(args or get_preset("tiny"), dtype=torch.bfloat16, seed=0)
    tok = get_tokenizer()
    inp = sample_chat(tok, "Describe it.")

    def generate_ids(marker=None) -> list[int]:
        steps = generate(model, inp, tok.pad_id, tok.stop_tokens, max_gen_len=max_gen_len, **({"marker": marker} if marker else {}))
        return [int(s.next_token[0]) for s in steps]

    return model, generate_ids


def tiny_runs(max_gen_len: int = 16) -> dict:
    """The CPU A/B scripts' two cases on tiny, by label: its greedy generation
    (`generation_case`) and the GPU scripts' prefill (`prefill_case`). Each is run(package=None,
    with_values=True): untraced where `package` is None, else traced by `package.trace` (this
    tracer, or another copy from `load_package`) with the CLI's options."""
    from walkthroughs.catalog import trace_options

    model, tokens = generation_case(max_gen_len=max_gen_len)
    prefill_model, prefill = prefill_case("tiny", "cpu")

    def generation(package=None, with_values: bool = True):
        if package is None:
            return tokens()
        with package.trace(model, **trace_options(with_values)) as t:
            return tokens(t.phase)

    def prefill_run(package=None, with_values: bool = True):
        if package is None:
            return prefill()
        with package.trace(prefill_model, **trace_options(with_values)):
            return prefill()

    return {f"generation ({max_gen_len} tokens)": generation, "prefill": prefill_run}


def time_calls(parts: list[tuple[object, str, str]], spent, calls=None, clock=time.perf_counter):
    """Wrap each `owner.attribute` of `parts` ((owner, attribute, label) triples) with a timer:
    every call adds its `clock` time to spent[label] (and 1 to calls[label], given `calls`).
    Returns an undo. A timer costs about a microsecond a call."""
    originals = []
    for owner, name, label in parts:
        original = getattr(owner, name)
        originals.append((owner, name, original))

        def wrapper(*args, __original=original, __label=label, **kwargs):
            t0 = clock()
            try:
                return __original(*args, **kwargs)
            finally:
                spent[__label] += clock() - t0
                if calls is not None:
                    calls[__label] += 1

        setattr(owner, name, wrapper)

    def undo():
        for owner, name, original in reversed(originals):
            setattr(owner, name, original)
    return undo


@contextmanager
def empty_module_hooks(model: torch.nn.Module):
    """Torch's per-module hooks, doing nothing (a pre-hook and an always-called post-hook, both
    with kwargs, on every module) while the block runs: what a tracer built on them pays before
    it records anything."""
    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(lambda mod, args, kwargs: None, with_kwargs=True))
        handles.append(m.register_forward_hook(lambda mod, args, kwargs, out: None, with_kwargs=True, always_call=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def empty_forward_wrappers(model: torch.nn.Module):
    """The mechanism llama-trace uses (`tracer.capture._Forward`), doing nothing, while the block
    runs: a wrapper around every module's forward, set on the instance."""
    modules = list(model.modules())
    for m in modules:
        inner = m.forward

        def forward(*args, __inner=inner, **kwargs):
            try:
                return __inner(*args, **kwargs)
            except BaseException:
                raise

        m.__dict__["forward"] = forward
    try:
        yield
    finally:
        for m in modules:
            del m.__dict__["forward"]


def interleaved_samples(cases: dict, repeats: int) -> tuple[dict, dict]:
    """Run every case once per round, `repeats` rounds: (wall seconds, CPU seconds of this
    process) per case, a list with one entry per round. With one torch thread the CPU time is
    the steadier of the two on a shared machine: it leaves out the time another tenant holds the
    core."""
    wall: dict = {k: [] for k in cases}
    cpu: dict = {k: [] for k in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)
    return wall, cpu


def interleaved(cases: dict, repeats: int) -> tuple[dict, dict]:
    """`interleaved_samples`' medians: (wall seconds, CPU seconds) per case."""
    import statistics

    wall, cpu = interleaved_samples(cases, repeats)
    return ({k: statistics.median(v) for k, v in wall.items()}, {k: statistics.median(v) for k, v in cpu.items()})


def floor_cases(model: torch.nn.Module, untraced) -> dict:
    """The cases every overhead table starts with: `untraced` (a run of `model`), and for scale
    the same run with torch's per-module hooks doing nothing and with the tracer's own mechanism
    doing nothing (its floor)."""

    def empty_hooks():
        with empty_module_hooks(model):
            return untraced()

    def empty_wrappers():
        with empty_forward_wrappers(model):
            return untraced()

    return {"untraced": untraced, "empty torch module hooks": empty_hooks,
            "empty forward wrappers (the tracer's floor)": empty_wrappers}


def overhead_table(title: str, cases: dict, repeats: int, ms_digits: int) -> list[str]:
    """`cases` (one of them "untraced") timed with two torch threads and then one: at each thread
    count every case runs once as a warm-up, then `repeats` interleaved rounds. A markdown table
    headed by `title`: per case and thread count, the median wall time (ms, to `ms_digits`
    decimals) and its ratio to the untraced run's; with one thread, the ratio of CPU times too
    (with two, the idle thread's spinning would count, so "—")."""
    lines = [f"| {title} | torch threads | median ms | ÷ untraced | CPU time ÷ untraced |", "|---|---|---|---|---|"]
    for threads in (2, 1):
        torch.set_num_threads(threads)
        for fn in cases.values():  # warm up at this thread count
            fn()
        wall, cpu = interleaved(cases, repeats)
        for name, t in wall.items():
            steady = f"{cpu[name] / cpu['untraced']:.2f}x" if threads == 1 else "—"
            lines.append(f"| {name} | {threads} | {t * 1000:.{ms_digits}f} | {t / wall['untraced']:.2f}x | {steady} |")
    return lines


def load_package(folder: Path, name: str):
    """The package in `folder` (e.g. another copy of `tracer`, from `git archive OLD tracer`),
    imported under another name; its relative imports follow."""
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return package
