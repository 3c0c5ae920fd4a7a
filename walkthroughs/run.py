"""Run Llama 3.2 Vision under the tracer: prompt, caches, vision, masks, prefill, next token.

This is the one place that knows both the model and the tracer: it picks the functions to
wrap and the stage rules from the catalog, and the shape symbols from the config.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import re
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

import torch
from PIL import Image

from model import ChatFormat, Message, ModelArgs, Tokenizer, build_model, get_preset, get_tokenizer, load_checkpoint
from model.checkpoint import detect_layout, read_checkpoint_args
from model.meta_kernels import use_native_meta_kernels
from model.tokenizer import TokenizerError
from model import generation, image_transform
from tracer import trace
from tracer.capture import Trace

from . import inputs
from .catalog import trace_options
from .defaults import DEFAULT_DEVICE, DEFAULT_DTYPE, DEFAULT_PROMPT, DEFAULT_TOP_P
from .header import CHECKPOINT_PRESET
from .sample_image import SAMPLE_IMAGE
from .summary import visible

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
LONGEST_CONTEXT = 131072  # Llama 3.2's context length: the most --max-seq-len may ask for


class RunError(ValueError):
    """Bad input for a run: a one-line message says what is wrong and what to do."""


@dataclass
class RunResult:
    trace: Trace
    header: dict
    summary: dict
    image: Image.Image | None = None


def version() -> str:
    try:
        return metadata.version("llama-trace")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def config_hash(args: ModelArgs) -> str:
    return hashlib.sha256(json.dumps(args.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def shape_symbols(args: ModelArgs, n_images: int, prompt_len: int, total_len: int, canvas: tuple[int, int] = (0, 0)) -> dict[str, int]:
    """The project's shape letters (model/args.py) with this run's sizes."""
    C, N = args.vision_max_num_chunks, args.vision_num_tokens
    return {
        **({"Wc": canvas[0], "Hc": canvas[1]} if canvas[0] else {}),
        "B": 1, "I": n_images, "C": C, "R": args.vision_chunk_size, "P": args.vision_num_patches,
        "N": N, "N8": N + args.vision_num_pad, "W": args.vision_width, "D": args.dim,
        "T": total_len, "M": args.max_seq_len, "S": prompt_len, "V": n_images * C * N, "H": args.n_heads, "Hkv": args.n_kv_heads,
        "Dh": args.head_dim, "Hv": args.vision_heads, "Dhv": args.vision_width // args.vision_heads,
        "F": args.ffn_hidden_dim, "Fv": int(args.vision_mlp_ratio * args.vision_width),
        "L": len(args.vision_return_intermediate), "X": len(args.fusion_schedule), "K": args.vocab_size,
        # products the code folds into one dim
        "C*N8": C * (N + args.vision_num_pad), "Hkv*Dh": args.n_kv_heads * args.head_dim, "W*L": args.vision_width * len(args.vision_return_intermediate),
        # sizes the notation has no letter for, listed so that no other letter is guessed for them
        "tiles": args.vision_max_num_tiles, "layers": args.n_layers, "vision_layers": args.vision_layers,
        "Dh/2": args.head_dim // 2,  # RoPE's frequency pairs (freqs_cis): on the 90B, as many as the heads H
    }


def _logit(v: float) -> float | str:
    """A logit for the summary: 4 decimals, or "nan", "inf", "-inf" as the value summaries write
    them (JSON has no NaN: a NaN weight once crashed the run here)."""
    if math.isfinite(v):
        return round(v, 4)
    return "nan" if v != v else ("inf" if v > 0 else "-inf")


def instruct_checkpoint(checkpoint: Path) -> bool:
    """Whether a checkpoint folder looks like an Instruct model's: "Instruct" (not "instructions")
    in its name as given or as resolved, or, for a Hugging Face cache snapshot
    (`models--meta-llama--Llama-3.2-11B-Vision-Instruct/snapshots/<hash>`), in the model's folder;
    for Meta's files in a repository's `original/`, in the repository's. Neither format's files
    say it."""
    names = []
    for path in (Path(checkpoint).absolute(), Path(checkpoint).resolve()):
        if path.name == "original":  # Meta's files inside a Hugging Face repository
            path = path.parent
        names.append(path.name)
        if path.parent.name == "snapshots":
            names.append(path.parent.parent.name)
    return any(re.search(r"instruct(?![a-z])", name, re.IGNORECASE) for name in names)


def default_layout(preset: str) -> str:
    """The prompt layout of a preset without --layout: chat for the instruct models and tiny."""
    return "chat" if preset.endswith("instruct") or preset == "tiny" else "completion"


def default_mode(preset: str) -> str:
    return "real" if preset == "tiny" else "meta"


def available_memory() -> int | None:
    """Bytes of memory the system can give this process now (Linux), else None."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def check_memory(args: ModelArgs, dtype: torch.dtype, checkpoint: bool = False) -> None:
    """A run on the CPU holds its weights (random ones, or a checkpoint's, read through mmap), the
    KV caches and masks for `max_seq_len` (M) positions, and activations: refuse one that cannot
    fit, rather than be killed by the system half-way (an 11B in bf16 needs about 20 GiB; M =
    LONGEST_CONTEXT needs 16 GiB for the causal mask [1, 1, M, M] alone)."""
    free = available_memory()
    if free is None:
        return
    shell = build_model(args, device="meta", dtype=dtype, setup_cache=False)  # no memory: only the sizes
    weights = sum(p.numel() for p in shell.parameters()) * dtype.itemsize
    M, V = args.max_seq_len, args.vision_max_num_chunks * args.vision_num_tokens
    cache = 2 * args.n_layers * args.max_batch_size * M * args.n_kv_heads * args.head_dim * dtype.itemsize  # keys and values
    masks = M * M + 3 * M * V * dtype.itemsize  # the causal mask (bool), the cross-attention mask [B, 1, T, V] as it is built
    total = weights * 1.2 + cache + masks + 2**30  # the weights, room for loading them, caches, masks and activations
    if total <= free:
        return
    parts = f"{weights / 2**30:.1f} GiB of weights, {(cache + masks) / 2**30:.1f} GiB of caches and masks for M = {M} positions"
    if cache + masks > weights:
        advice = "lower --max-seq-len"
    elif checkpoint:
        advice = "use a machine with more memory, or --device cuda"
    else:
        advice = "use meta mode (the default for 11b and 90b: exact shapes, no weights) or --model tiny"
    raise RunError(f"this run needs about {total / 2**30:.0f} GiB ({parts}) and {free / 2**30:.1f} GiB is free: {advice}")


def checkpoint_tokenizer(path: Path | None, vocab_size: int) -> tuple[Tokenizer, str | None]:
    """The checkpoint's own tokenizer.model, or the bundled Llama 3 one where it has none (with a
    note). Either must hold the model's `vocab_size` tokens: the model writes ids up to it."""
    if path is None:
        tokenizer, note = get_tokenizer(), "the checkpoint has no tokenizer.model: using the Llama 3 tokenizer from llama-models"
    else:
        remedy = "re-download it, or move it away to use the Llama 3 tokenizer from llama-models"
        try:
            tokenizer, note = Tokenizer(path), None
        except TokenizerError as err:  # names the file and what is wrong with it
            if isinstance(err.__context__, PermissionError):
                raise RunError(f"{visible(str(path))}: permission denied; give this user read access to the checkpoint's files") from None
            raise RunError(f"{err}; {remedy}") from None
        except Exception as err:  # tiktoken refusing the ranks
            raise RunError(f"cannot read {visible(str(path))} as a tokenizer ({err.__class__.__name__}); {remedy}") from None
    if tokenizer.n_words != vocab_size:
        where = visible(str(path)) if path is not None else "the Llama 3 tokenizer (the checkpoint has none)"
        raise RunError(f"{where} holds {tokenizer.n_words} tokens, special ones included, but the model's vocab_size is {vocab_size}:"
                       " a tokenizer of another model; put this model's own tokenizer.model in the checkpoint folder")
    return tokenizer, note


def image_for_log(header: dict, given: Path | None = None) -> tuple[Image.Image | None, str | None]:
    """The traced image again, for the pictures of a page rendered from a saved log: the file the
    log names, loaded and checked as `run` loads it, and only if its pixels are the ones traced;
    otherwise no image, and a note that says why. `given` (render's --image) stands in for that
    file, and anything wrong with it is a RunError or an InputError."""
    traced = header.get("inputs", {}).get("image") or {}
    source = traced.get("file")
    if not source:
        if given is not None:
            raise RunError("this log traced no image; leave out --image")
        return None, None
    path = given if given is not None else SAMPLE_IMAGE if source == "bundled" else Path(source)
    left_out = "the page leaves out the pictures of the image"
    if given is None and not path.is_file():
        return None, (f"{left_out}: {visible(source)}, the image this log traced, is not there (a relative path is read from"
                      " the folder render runs in); pass it with --image")
    cfg = header["model"]["config"]  # checked by log_check, as the image's sizes are
    try:
        loaded = inputs.load_image(path, chunk_size=cfg["vision_chunk_size"], max_num_chunks=cfg["vision_max_num_chunks"],
                                   dtype=DTYPES.get(header["dtype"], torch.bfloat16))
    except inputs.InputError as err:
        if given is not None:
            raise
        return None, f"{left_out}: {err}"
    now, digest = loaded.info, traced.get("pixels_sha256")
    if (now["pixels_sha256"] != digest) if digest else (now["size"] != traced.get("size") or now["mode"] != traced.get("mode")):
        size = "x".join(map(str, traced.get("size") or ["?", "?"]))
        problem = (f"{visible(str(path))} is not the image this log traced (it is {now['size'][0]}x{now['size'][1]} {now['mode']};"
                   f" the log's was {size} {traced.get('mode', '?')}{'' if digest is None else ', with other pixels'})")
        if given is not None:
            raise RunError(f"--image {problem}; pass the traced image")
        return None, f"{left_out}: {problem}"
    return loaded.image, None


def _traced_run(t, state, model, fmt, image, prompt, instruct, args, canvas, tokenizer, run_device, torch_dtype, mode,
                max_new_tokens, temperature, top_p, seed) -> None:
    """Prompt, caches, vision, prefill and decode steps, inside the trace; results go into `state`."""
    max_seq_len = args.max_seq_len
    content = [image, prompt]
    inp = state["inp"] = fmt.encode_dialog_prompt([Message("user", content)]) if instruct else fmt.encode_content(content)
    n = state["n"] = len(inp.tokens)
    if n >= max_seq_len:
        raise RunError(f"the prompt is {n} tokens; this model's context here is {max_seq_len}: shorten the prompt, or raise --max-seq-len")
    # Meta's generate: total_len = min(max_gen_len + prompt_len, max_seq_len), max_gen_len = max_seq_len - 1 by default
    total_len = state["total_len"] = min((max_new_tokens or max_seq_len - 1) + n, max_seq_len)
    symbols = state["symbols"] = shape_symbols(args, len(inp.vision.images) if inp.vision else 0, n, total_len, canvas)
    t.set_symbols(symbols)

    def marker(name, **info):  # each step's phase, with S = the positions this step feeds
        first, last = info["positions"]
        t.set_symbols({**symbols, "S": last - first})
        return t.phase(name, **info)

    model.setup_cache(1, run_device, torch_dtype)
    for step in generation.generate(
        model, inp, tokenizer.pad_id, tokenizer.stop_tokens, max_gen_len=max_new_tokens, temperature=temperature,
        top_p=top_p, seed=seed if temperature > 0 else None, device=run_device, marker=marker, max_steps=max_new_tokens or 1,
    ):
        if not state["steps"]:
            state["prefill_logits"] = step.logits[0, -1].float()  # [K]
        state["steps"].append(step.next_token[0] if mode != "meta" else None)


def run(
    image_path: Path | None = None,
    prompt: str = DEFAULT_PROMPT,
    preset: str = "11b-instruct",
    mode: str | None = None,
    ops: bool = False,
    timing: bool = True,
    values: bool = True,
    device: str = DEFAULT_DEVICE,
    dtype: str = DEFAULT_DTYPE,
    seed: int = 0,
    max_new_tokens: int | None = None,
    temperature: float = 0.0,
    top_p: float = DEFAULT_TOP_P,
    allow_special: bool = False,
    checkpoint: Path | None = None,
    layout: str | None = None,
    progress=None,
    max_seq_len: int | None = None,
) -> RunResult:
    torch_dtype = DTYPES[dtype]
    if max_seq_len is not None and not 2 <= max_seq_len <= LONGEST_CONTEXT:
        raise RunError(f"--max-seq-len must be between 2 and {LONGEST_CONTEXT} (Llama 3.2's context); got {max_seq_len}")
    # Cheap checks first (config, image, prompt), the weights last.
    runtime = {"max_seq_len": max_seq_len} if max_seq_len is not None else {}
    args = read_checkpoint_args(checkpoint, **runtime) if checkpoint is not None else replace(get_preset(preset), **runtime)
    loaded = inputs.load_image(image_path, chunk_size=args.vision_chunk_size, max_num_chunks=args.vision_max_num_chunks, dtype=torch_dtype)
    image, image_info, notes = loaded.image, loaded.info, list(loaded.notes)
    if checkpoint is not None:  # real weights: the config, chunk size included, comes from the checkpoint
        mode, run_device = "real", device
        preset = CHECKPOINT_PRESET + Path(checkpoint).resolve().name
        instruct = layout == "chat" if layout else instruct_checkpoint(checkpoint)
        if not layout:
            notes.append(f"{'chat' if instruct else 'completion'} prompt layout: the checkpoint's path "
                         f"{'names' if instruct else 'does not name'} an Instruct model; --layout {'completion' if instruct else 'chat'} for the other")
        on_disk = detect_layout(checkpoint)
        tokenizer, note = checkpoint_tokenizer(on_disk.tokenizer, args.vocab_size)
        notes += [note] if note else []
        if on_disk.also_hf:
            notes.append("the checkpoint folder holds Meta's layout and Hugging Face's: reading Meta's (params.json, consolidated*.pth)")
    else:
        mode = mode or default_mode(preset)
        run_device = "meta" if mode == "meta" else device
        moot = [option for option, given in (("--temperature", temperature > 0), ("--top-p", top_p != DEFAULT_TOP_P), ("--no-values", not values)) if given]
        if mode == "meta" and moot:
            notes.append(f"{' and '.join(moot)}: meta mode computes shapes only, no values to sample from or summarise;"
                         " --model tiny or --checkpoint DIR for real ones")
        tokenizer = get_tokenizer()
        instruct = layout == "chat" if layout else default_layout(preset) == "chat"
    if top_p != DEFAULT_TOP_P and temperature == 0 and mode != "meta":
        notes.append(f"--top-p {top_p:g}: greedy decoding (--temperature 0) takes the most likely token; top-p sampling needs --temperature above 0")
    budget = inputs.prompt_budget(tokenizer, args.max_seq_len, chat=instruct)
    if max_seq_len is not None and budget < 1:
        template = inputs.template_tokens(tokenizer, chat=instruct)
        raise RunError(f"--max-seq-len {max_seq_len} leaves no room for a prompt: the template alone takes {template} tokens;"
                       f" use at least {template + 2}")
    notes += inputs.check_prompt(prompt, tokenizer, budget, allow_special=allow_special)
    fmt = ChatFormat(tokenizer, allow_special=allow_special)
    if checkpoint is not None:
        if run_device == "cpu":
            check_memory(args, torch_dtype, checkpoint=True)
        model, args, _ = load_checkpoint(checkpoint, device=run_device, dtype=torch_dtype, progress=progress, setup_cache=False, **runtime)  # the trace sets them up
    else:
        if run_device == "meta":
            use_native_meta_kernels()  # torch's C++ shape code: seconds faster, same shapes
        elif run_device == "cpu":
            check_memory(args, torch_dtype)
        model = build_model(args, device=run_device, dtype=torch_dtype, seed=seed if mode == "real" else 0, setup_cache=False)

    # The canvas, known before the trace so the image stages get their shape letters (Hc, Wc).
    canvas = image_transform.get_best_fit(
        image.size, image_transform.find_supported_resolutions(args.vision_max_num_chunks, args.vision_chunk_size), torch_dtype
    )

    t = trace(model, **trace_options(values, timing, ops), source_roots=[str(PROJECT_ROOT)])
    state = {"inp": None, "n": 0, "total_len": 0, "steps": [], "prefill_logits": None, "symbols": {}}
    try:
        with t:
            _traced_run(t, state, model, fmt, image, prompt, instruct, args, canvas, tokenizer, run_device, torch_dtype, mode,
                        max_new_tokens, temperature, top_p, seed)
    except RunError:
        raise
    except Exception:  # the forward failed: keep every event so far; t.error names the stage and line
        if t.error is None:
            raise
    inp, n, total_len, steps, prefill_logits = (state[k] for k in ("inp", "n", "total_len", "steps", "prefill_logits"))
    if max_new_tokens and n and n + max_new_tokens > args.max_seq_len:
        notes.append(f"--max-new-tokens {max_new_tokens}: the context here is {args.max_seq_len} tokens (max_seq_len), so at most"
                     f" {args.max_seq_len - n} follow the {n}-token prompt (--max-seq-len raises it)")

    header = {
        "tool": "llama-trace",
        "versions": {"llama-trace": version(), "torch": torch.__version__, "python": platform.python_version()},
        "model": {"preset": preset, "config": args.to_dict(), "config_hash": config_hash(args),
                  **({"checkpoint": str(checkpoint)} if checkpoint is not None else {})},  # the path as given
        "inputs": {"image": image_info, "notes": notes, "prompt": prompt, "layout": "chat" if instruct else "completion",
                   "token_ids": inp.tokens if inp else [], "vision_mask": inp.vision.mask if inp and inp.vision else [],
                   **({"allow_special": True} if allow_special else {})},
        "mode": mode,
        "device": run_device,
        "dtype": dtype,
        "ops": ops,
        "values": values,
        "timing": timing,
        "symbols": state["symbols"],  # the prefill's: S is the prompt length (decode steps record S = 1 themselves)
        "generation": {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
                       "seed": seed if temperature > 0 or (mode == "real" and checkpoint is None) else None},  # sampling's, or the random weights'
    }
    summary = {"prompt_tokens": n, "total_len": total_len, "steps": len(steps)}
    if mode != "meta" and steps:
        ids = [int(x) for x in steps]
        summary["next_token"] = {"id": ids[0], "text": tokenizer.decode([ids[0]])}
        summary["generated"] = {"ids": ids, "text": tokenizer.decode(ids), "stopped": "stop token" if ids[-1] in tokenizer.stop_tokens else "length"}
        top = torch.topk(prefill_logits, 5)
        summary["top5"] = [{"id": int(i), "text": tokenizer.decode([int(i)]), "logit": _logit(float(v))} for v, i in zip(top.values, top.indices)]
    return RunResult(t, header, summary, image.convert("RGB"))
