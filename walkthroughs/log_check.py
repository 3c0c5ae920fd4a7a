"""What a loaded log must hold before the walkthrough renderers (summary, terminal, markdown,
html, step, quiz, diff) read it without looking: `check_log` raises a one-line LogError naming
what is missing or of the wrong type. (`tracer.log.load_lines` has already checked the tracer's
own fields; this checks what a Llama run adds: the model config, the inputs, the shape letters,
the image stages, the run's result.)"""

from __future__ import annotations

import re

from model import get_preset
from tracer.log import LogError, found, shown

from .context import find_event, first_values
from .run import shape_symbols
from .summary import first_tensor, is_letter


CONFIG_INTS = ("n_layers", "n_heads", "n_kv_heads", "n_learnable_embeddings", "vision_width", "vision_layers", "vision_global_layers",
               "vision_chunk_size", "vision_max_num_chunks", "vision_patch_size", "vision_num_cross_attention_layers", "max_seq_len")
CONFIG_DIVISORS = ("n_kv_heads", "vision_chunk_size", "vision_patch_size", "vision_num_cross_attention_layers")
CONFIG_NUMBERS = ("rope_theta", "norm_eps")
STATS = {"min", "max", "mean", "std", "nan", "inf"}
# The letters the annotations and the page fill in: every capitalised one that run.shape_symbols
# writes (expressions such as C*N8 and Dh/2, and the canvas's Wc and Hc, which only some runs
# have, aside: a log from before Dh/2 was listed still renders). M, the cache length, came later
# too: `context.run_context` reads it from the config where a log lacks it.
SYMBOLS = tuple(k for k in shape_symbols(get_preset("tiny"), 1, 1, 1) if is_letter(k) and k != "M")


def load_run_log(path) -> tuple[dict, list[dict], dict]:
    """A saved run log, loaded (`tracer.log.load_log`) and checked (`check_log`): (header,
    events, summary), or LogError with a one-line reason."""
    from tracer.log import load_log

    header, events, summary = load_log(path)
    check_log(header, events, str(path), summary=summary)
    return header, events, summary


def check_log(header: dict, events: list[dict], source: str = "the log", summary: dict | None = None) -> None:
    """Raise LogError (one line) when a loaded log lacks what the walkthrough renderers read
    (the summary's result fields too, when `summary` is given)."""
    problem = _run_header_problem(header) or _run_events_problem(events) or _run_summary_problem(summary or {})
    if problem:
        raise LogError(f"{source}: {problem}; is it a llama-trace run log? write it again with `llama-trace run --format json -o FILE`")


def _run_header_problem(header: dict) -> str:
    return _model_problem(header.get("model")) or _inputs_problem(header.get("inputs")) or _run_problem(header)


def _model_problem(model) -> str:
    if type(model) is not dict:
        return "the header has no 'model' object"
    if type(model.get("preset")) is not str or type(model.get("config_hash")) is not str:
        return "the header's 'model' needs a 'preset' name and a 'config_hash'"
    cfg = model.get("config")
    if type(cfg) is not dict:
        return "the header's 'model' has no 'config' object"
    for key in CONFIG_INTS:
        if type(cfg.get(key)) is not int or cfg[key] < (1 if key in CONFIG_DIVISORS else 0):
            return f"the model config's {key!r} must be a {'positive' if key in CONFIG_DIVISORS else 'non-negative'} integer ({found(cfg, key)})"
    for key in CONFIG_NUMBERS:
        if type(cfg.get(key)) not in (int, float):
            return f"the model config's {key!r} must be a number ({found(cfg, key)})"
    taps = cfg.get("vision_return_intermediate")
    if type(taps) is not list or not all(type(t) is int for t in taps):
        return f"the model config's 'vision_return_intermediate' must be a list of layer numbers ({found(cfg, 'vision_return_intermediate')})"
    return ""


def _is_digest(value) -> bool:
    """A SHA-256 in hex (a log written before the image's pixels were recorded has none)."""
    return type(value) is str and re.fullmatch("[0-9a-f]{64}", value) is not None


def _inputs_problem(inputs) -> str:
    if type(inputs) is not dict:
        return "the header has no 'inputs' object"
    image = inputs.get("image")
    if image is not None and (type(image) is not dict or ("size" in image and _size_problem(image))
                              or type(image.get("file", "")) not in (str, type(None))
                              or "pixels_sha256" in image and not _is_digest(image["pixels_sha256"])):
        return (f"the header's input 'image' must be an object with a 'size' of [width, height] and, where it has one,"
                f" a 'pixels_sha256' of 64 hex digits ({found(inputs, 'image')})")
    mask = inputs.get("vision_mask", [])
    if type(mask) is not list or (mask and type(mask[0]) is not list):
        return f"the header's input 'vision_mask' must be a list of [start, end] pairs ({found(inputs, 'vision_mask')})"
    if type(inputs.get("token_ids", [])) is not list:
        return f"the header's input 'token_ids' must be a list ({found(inputs, 'token_ids')})"
    return ""


def _run_problem(header: dict) -> str:
    if header.get("tool", "llama-trace") != "llama-trace":
        return f"the header says another tool wrote it ({found(header, 'tool')})"
    for key in ("mode", "dtype"):
        if type(header.get(key)) is not str:
            return f"the header's {key!r} must be a string ({found(header, key)})"
    versions = header.get("versions")
    if type(versions) is not dict or not {"llama-trace", "torch"} <= versions.keys():
        return f"the header's 'versions' must name the llama-trace and torch versions ({found(header, 'versions')})"
    gen = header.get("generation")
    if gen is not None and type(gen) is not dict:
        return f"the header's 'generation' must be an object ({found(header, 'generation')})"
    for key, kinds, what in (("max_new_tokens", (int,), "an integer"), ("seed", (int,), "an integer"),
                             ("temperature", (int, float), "a number"), ("top_p", (int, float), "a number")):
        if gen and gen.get(key) is not None and type(gen[key]) not in kinds:
            return f"the header's generation {key!r} must be {what} or null ({found(gen, key)})"
    missing = [s for s in SYMBOLS if s not in header.get("symbols", {})]
    if missing:
        return f"the header's 'symbols' lack {', '.join(missing)}"
    return ""


def _run_events_problem(events: list[dict]) -> str:
    """Each event's fields that the renderers format (tracer.log has checked the rest), then the
    image stages' events that run_context reads."""
    for e in events:
        problem = _run_event_problem(e)
        if problem:
            stage = f" (stage {e['stage']})" if e.get("stage") else ""
            return f"event {e['seq']}{stage} {problem}"
    return _image_events_problem(events)


def _run_event_problem(e: dict) -> str:
    if type(e.get("path")) is not str or type(e.get("name")) is not str:
        return "needs a string 'path' and 'name'"
    params = e.get("params")
    if params is not None and (type(params) is not dict or type(params.get("total") or 0) is not int):
        return f"needs a 'params' object with an integer 'total' ({found(e, 'params')})"
    src = e.get("src")
    if src is not None and (type(src) is not dict or type(src.get("file")) is not str or type(src.get("line")) is not int
                            or type(src.get("code", "")) is not str):
        return f"needs a 'src' with a 'file', a 'line' and its 'code' ({found(e, 'src')})"
    if e["kind"] == "phase" and type(e.get("info")) is not dict:
        return "needs an 'info' object (it is a phase)"
    if e["kind"] == "phase" and e["path"] == "decode" and type(e["info"].get("step")) is not int:
        return "needs its decode 'step' number in 'info'"
    for side in ("inputs", "outputs"):
        for i, item in enumerate(e.get(side, [])):
            problem = _item_problem(item)
            if problem:
                return f"{side}[{i}] {problem}"
    return ""


def _item_problem(item: dict) -> str:
    """An input or output as summary.fmt_shape and the shape tables show it."""
    if type(item.get("path")) is not str or type(item.get("dtype", "")) is not str:
        return "needs a string 'path' (and 'dtype', if any)"
    sym = item.get("sym")
    if sym is not None and (type(sym) is not list or not all(type(s) in (str, type(None)) for s in sym)):
        return f"needs its 'sym' as a list of letters or nulls ({found(item, 'sym')})"
    stats = item.get("stats")
    if stats is not None and (type(stats) is not dict or not STATS <= stats.keys()):
        return f"needs {', '.join(sorted(STATS))} in its 'stats' ({found(item, 'stats')})"
    if "image" in item and (type(item["image"]) is not dict or _size_problem(item["image"]) or "mode" not in item["image"]):
        return f"needs an 'image' with a 'size' of [width, height] and a 'mode' ({found(item, 'image')})"
    if type(item.get("values", [])) is not list:
        return f"needs its 'values' as a list ({found(item, 'values')})"
    return ""


def _image_events_problem(events: list[dict]) -> str:
    """The canvas, the chunks and the resized image, as run_context reads them."""
    best_fit = find_event(events, path="get_best_fit")
    canvas = first_values(best_fit)
    if canvas and (type(canvas) is not list or len(canvas) < 2 or not all(type(v) is int for v in canvas[:2])):
        return f"event {best_fit['seq']} (get_best_fit) must give the canvas as [width, height] (found {shown(canvas)})"
    chunks = find_event(events, stage="image.chunks")
    if chunks and not (first_tensor(chunks.get("outputs", [])) or {}).get("shape"):
        return f"event {chunks['seq']} (stage image.chunks) needs an output with a shape"
    resize = find_event(events, stage="image.resize")
    if resize and not resize.get("outputs"):
        return f"event {resize['seq']} (stage image.resize) needs an output"
    return ""


def _run_summary_problem(summary: dict) -> str:
    """The run's result as the renderers print it: prompt length, next token, top 5, generated text."""
    if type(summary.get("prompt_tokens", 0)) is not int:
        return f"the summary's 'prompt_tokens' must be an integer ({found(summary, 'prompt_tokens')})"
    if "next_token" in summary and not _is_token(summary["next_token"]):
        return f"the summary's 'next_token' must be an object with an integer 'id' and its 'text' ({found(summary, 'next_token')})"
    top5 = summary.get("top5", [])
    if type(top5) is not list or not all(_is_token(t) and "logit" in t for t in top5):
        return f"the summary's 'top5' must list tokens with an 'id', a 'text' and a 'logit' ({found(summary, 'top5')})"
    generated = summary.get("generated", {"ids": [], "text": "", "stopped": ""})
    if type(generated) is not dict or type(generated.get("ids")) is not list or not {type(generated.get(k)) for k in ("text", "stopped")} <= {str}:
        return f"the summary's 'generated' must be an object with 'ids', 'text' and 'stopped' ({found(summary, 'generated')})"
    return ""


def _is_token(token) -> bool:
    return type(token) is dict and type(token.get("id")) is int and type(token.get("text")) is str


def _size_problem(image: dict) -> bool:
    size = image.get("size")
    return type(size) is not list or len(size) != 2 or not all(type(v) is int for v in size)
