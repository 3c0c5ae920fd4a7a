"""Facts for the walkthrough templates, never typed by hand: read from a trace log, or from
`model/` where no log holds them (the presets' chunk sizes, the RoPE scaling constants).

`run_context(header, events)` gives run-wide values: the shape symbols (`{N}`, `{D}` …), the
image, canvas and tile layout, the prompt, the fusion schedule, totals. `stage_context` adds the
values of one stage: its first input/output shapes, call count, parameters, FLOPs.
"""

from __future__ import annotations

from model import PRESETS, ModelArgs, rope

from .annotations import phrase
from .summary import first_tensor, fmt_count, fmt_shape, phase_length, stage_rows


def find_event(events: list[dict], **where) -> dict | None:
    return next((e for e in events if all(e.get(k) == v for k, v in where.items())), None)


def first_values(event: dict | None, side: str = "outputs") -> list:
    if not event:
        return []
    for item in event.get(side, []):
        if "values" in item:
            return item["values"]
    return []


def run_context(header: dict, events: list[dict], summary: dict) -> dict:
    cfg = header["model"]["config"]
    sym = dict(header.get("symbols", {}))
    sym.setdefault("M", cfg["max_seq_len"])  # a log written before M had a letter
    image = header["inputs"].get("image") or {}
    canvas = first_values(find_event(events, path="get_best_fit")) or [0, 0]
    chunks_event = find_event(events, stage="image.chunks")
    real_chunks = first_tensor(chunks_event["outputs"])["shape"][0] if chunks_event else 0
    R = cfg["vision_chunk_size"]
    rows, cols = (canvas[1] // R, canvas[0] // R) if canvas[0] else (0, 0)
    resize = find_event(events, stage="image.resize")
    resized = (resize["outputs"][0].get("image") or {}).get("size", image.get("size")) if resize else image.get("size")
    mask = header["inputs"].get("vision_mask") or [[None, None]]
    total = flops(events)
    taps = cfg["vision_return_intermediate"]
    heads = cfg["n_heads"] // cfg["n_kv_heads"]
    ctx = {
        **sym,
        "preset": header["model"]["preset"],
        "mode": header["mode"],
        "dtype": header["dtype"],
        "image_w": (image.get("size") or [0, 0])[0],
        "image_h": (image.get("size") or [0, 0])[1],
        "image_mode": image.get("mode", ""),
        "resized_w": (resized or [0, 0])[0],
        "resized_h": (resized or [0, 0])[1],
        "resize_kept": phrase("resize_kept") if resized == image.get("size") else "",
        "canvas_w": canvas[0],
        "canvas_h": canvas[1],
        "rows": rows,
        "cols": cols,
        "chunks": real_chunks,
        "empty_chunks": cfg["vision_max_num_chunks"] - real_chunks,
        "empty_attended": phrase("empty_attended") if cfg["vision_max_num_chunks"] > real_chunks else "",
        "empty_contents": phrase("empty_contents") if cfg["vision_max_num_chunks"] > real_chunks else "",
        "max_chunks": cfg["vision_max_num_chunks"],
        "patch": cfg["vision_patch_size"],
        "grid": R // cfg["vision_patch_size"],
        "npad": sym.get("N8", 0) - sym.get("N", 0),
        "prompt_tokens": summary.get("prompt_tokens", len(header["inputs"].get("token_ids", []))),
        "image_pos": mask[0][0] if mask and mask[0] else None,
        "layout": header["inputs"].get("layout", ""),
        "taps": ", ".join(str(t) for t in taps),
        "tap_outputs": ", ".join(str(t - 1) for t in taps),
        "n_taps": len(taps),
        "n_layers": cfg["n_layers"],
        "vision_layers": cfg["vision_layers"],
        "global_layers": cfg["vision_global_layers"],
        "n_xattn": cfg["vision_num_cross_attention_layers"],
        "fusion": ", ".join(str(i) for i in _fusion(cfg)),
        "n_rep": heads,
        "n_learnable": cfg["n_learnable_embeddings"],
        "vision_dim": (len(taps) + 1) * cfg["vision_width"],
        "preset_chunk_sizes": preset_chunk_sizes(),
        "rope_theta": int(cfg["rope_theta"]),
        **rope_prose(cfg.get("use_scaled_rope", ModelArgs().use_scaled_rope)),  # a log from before the field
        "norm_eps": cfg["norm_eps"],
        "total_flops": fmt_count(total),
        "vision_flops_share": share(flops(events, "vision.", "image.", "xattn."), total),  # the image side
        "encoder_flops_share": share(flops(events, "vision."), total),  # the encoder and projection
        "xattn_kv_flops_share": share(flops(events, "xattn."), total),
    }
    return ctx


def preset_chunk_sizes() -> str:
    """The full-size presets' chunk sizes, "`11b` 448 px, …": the one size that differs between
    checkpoints of the same architecture (model/args.py, after Meta's sku_list)."""
    return ", ".join(f"`{name}` {args.vision_chunk_size} px" for name, args in PRESETS.items() if name != "tiny")


def rope_prose(scaled: bool) -> dict:
    """The RoPE sentences for the prose: Llama3's scaling with its numbers (model/rope.py), or that
    the config turns it off."""
    numbers = {"rope_factor": rope.SCALE_FACTOR, "rope_low_wavelen": rope.OLD_CONTEXT_LEN // rope.LOW_FREQ_FACTOR,
               "rope_high_wavelen": rope.OLD_CONTEXT_LEN // rope.HIGH_FREQ_FACTOR}
    return {"rope_scaled_with": phrase("rope_scaled_with") if scaled else "",
            "rope_scaling": phrase("rope_scaling").format(**numbers) if scaled else phrase("rope_unscaled")}


def _fusion(cfg: dict) -> list[int]:
    layers = list(range(cfg["n_layers"]))
    k = -(-len(layers) // cfg["vision_num_cross_attention_layers"])
    return layers[::-1][::k][: cfg["vision_num_cross_attention_layers"]][::-1]


def flops(events: list[dict], *stages: str) -> int:
    """The FLOPs of the events in the stages whose ids start so; of all events, without `stages`."""
    return sum(e.get("flops", 0) for e in events if not stages or (e.get("stage") or "").startswith(stages))


def share(n: int, total: int, digits: int = 0) -> str:
    """n as a percentage of total: "94%"; "n/a" where the run counted no FLOPs."""
    return f"{100 * n / total:.{digits}f}%" if total else "n/a"


def stage_context(base: dict, row: dict, total_flops: int) -> dict:
    """`row` is one entry of summary.stage_rows: first event, calls, params, FLOPs."""
    e = row["first"]
    ins, outs = first_tensor(e.get("inputs", [])), first_tensor(e.get("outputs", []))
    return {
        **base,
        "in": fmt_shape(ins) if ins else "—",
        "out": fmt_shape(outs) if outs else "—",
        "calls": row["calls"],
        "params": fmt_count(row["params"]) if row["params"] else "0",
        "flops": fmt_count(row["flops"]) if row["flops"] else "0",
        "flops_share": share(row["flops"], total_flops, digits=1),
    }


def all_stage_contexts(header: dict, events: list[dict], summary: dict) -> list[tuple[dict, dict]]:
    base = run_context(header, events, summary)
    total = flops(events)
    by_seq = {e["seq"]: e for e in events}
    return [(row, stage_context({**base, **_phase_symbols(row["first"], by_seq)}, row, total)) for row in stage_rows(events)]


def _phase_symbols(event: dict, by_seq: dict[int, dict]) -> dict:
    """The letters that the phase an event ran in sets for itself: S, the positions a step feeds
    (a decode step's 1 where the header has the prompt's length)."""
    while event is not None and event["kind"] != "phase":
        event = by_seq.get(event.get("parent"))
    length = phase_length(event)
    return {} if length is None else {"S": length}
