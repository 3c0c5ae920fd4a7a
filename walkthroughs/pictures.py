"""Pictures for the deep-dive page, drawn from the trace's facts with PIL (deterministic bytes).

- the input image on its canvas, with the chunk grid;
- the chunks themselves, empty slots included;
- the cross-attention mask: prompt rows x vision-token columns, grouped by chunk;
- the encoder's attention mask: which (query, key) pairs are blocked, per chunk and padding.
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

GRID = (255, 210, 0)
ATTEND = (110, 190, 120)
BLOCKED = (45, 45, 55)
PAD = (200, 120, 60)
ERASED = (150, 170, 215)  # attends, but its output is zeroed afterwards
GREY = (128, 128, 128)
TEXT = (20, 20, 20)
BG = (250, 250, 250)


def png_bytes(image: Image.Image) -> bytes:
    """PNG without timestamps or other metadata, so identical pictures give identical bytes."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def canvas_picture(image: Image.Image, resized: tuple[int, int], canvas: tuple[int, int], rows: int, cols: int, width: int = 800) -> Image.Image:
    """The resized image pasted top-left on the black canvas, chunk borders in yellow."""
    scaled = image.convert("RGB").resize(resized, Image.BILINEAR) if image.size != tuple(resized) else image.convert("RGB")
    full = Image.new("RGB", canvas, (0, 0, 0))
    full.paste(scaled)
    scale = width / canvas[0]
    out = full.resize((width, max(1, round(canvas[1] * scale))), Image.BILINEAR)
    draw = ImageDraw.Draw(out)
    cw, ch = out.size[0] / cols, out.size[1] / rows
    for r in range(rows):
        for c in range(cols):
            box = [round(c * cw), round(r * ch), round((c + 1) * cw) - 1, round((r + 1) * ch) - 1]
            draw.rectangle(box, outline=GRID, width=3)
            draw.text((box[0] + 8, box[1] + 6), f"chunk {r * cols + c}", fill=GRID)
    return out


def chunks_picture(image: Image.Image, resized, canvas, rows: int, cols: int, max_chunks: int, tile: int = 180) -> Image.Image:
    """Every chunk slot in order: the real chunks (row-major) then the empty slots (mid-grey:
    0.0 after normalisation is the mean colour, not black)."""
    scaled = image.convert("RGB").resize(resized, Image.BILINEAR) if image.size != tuple(resized) else image.convert("RGB")
    full = Image.new("RGB", canvas, (0, 0, 0))
    full.paste(scaled)
    R = canvas[0] // cols
    gap = 12
    out = Image.new("RGB", (max_chunks * (tile + gap) + gap, tile + 2 * gap + 16), BG)
    draw = ImageDraw.Draw(out)
    for k in range(max_chunks):
        x = gap + k * (tile + gap)
        if k < rows * cols:
            r, c = divmod(k, cols)
            crop = full.crop((c * R, r * R, (c + 1) * R, (r + 1) * R)).resize((tile, tile), Image.BILINEAR)
            out.paste(crop, (x, gap))
            label = f"{k}: row {r}, col {c}"
        else:
            draw.rectangle([x, gap, x + tile - 1, gap + tile - 1], fill=(123, 117, 104))  # CLIP mean colour
            label = f"{k}: empty"
        draw.text((x, gap + tile + 2), label, fill=TEXT)
    return out


def xattn_mask_picture(n_text: int, image_pos: int | None, chunks: int, max_chunks: int, cell: int = 12, chunk_w: int = 60) -> Image.Image:
    """The expanded cross-attention mask as the model uses it, after the row mask. Rows: prompt
    positions; columns: the max_chunks chunk blocks of vision tokens. Green where the position
    attends, dark where the mask holds finfo.min. Rows before the image token see no chunk, so
    the row mask turned them to all zeros: they attend to every key, empty slots included, and
    their output is zeroed afterwards (blue)."""
    left, top = 40, 24
    w = left + max_chunks * chunk_w + 10
    h = top + n_text * cell + 10
    out = Image.new("RGB", (w, h), BG)
    draw = ImageDraw.Draw(out)
    for c in range(max_chunks):
        draw.text((left + c * chunk_w + 4, 6), f"c{c}" + ("" if c < chunks else " (empty)"), fill=TEXT)
    for t in range(n_text):
        y = top + t * cell
        if t % 5 == 0:
            draw.text((4, y), str(t), fill=TEXT)
        erased = image_pos is None or t < image_pos
        for c in range(max_chunks):
            colour = ERASED if erased else ATTEND if c < chunks else BLOCKED
            draw.rectangle([left + c * chunk_w, y, left + (c + 1) * chunk_w - 2, y + cell - 2], fill=colour)
    return out


def encoder_mask_picture(chunks: int, max_chunks: int, n_real: int = 9, n_pad: int = 3, cell: int = 6) -> Image.Image:
    """The C*N8 x C*N8 encoder mask, not to scale: each chunk is drawn as `n_real` token cells
    then `n_pad` padding cells. Blocked (dark) only where query and key are both padding
    (padding tokens, or any token of an empty chunk); everything else attends (green)."""
    per = n_real + n_pad
    size = max_chunks * per
    out = Image.new("RGB", (size * cell + 2, size * cell + 2), BG)
    draw = ImageDraw.Draw(out)

    def is_pad(i: int) -> bool:
        chunk, pos = divmod(i, per)
        return chunk >= chunks or pos >= n_real

    for q in range(size):
        for k in range(size):
            colour = BLOCKED if is_pad(q) and is_pad(k) else ATTEND
            draw.rectangle([1 + k * cell, 1 + q * cell, k * cell + cell - 1, q * cell + cell - 1], fill=colour)
    for c in range(1, max_chunks):
        x = 1 + c * per * cell
        draw.line([(x - 1, 0), (x - 1, size * cell + 1)], fill=GRID)
        draw.line([(0, x - 1), (size * cell + 1, x - 1)], fill=GRID)
    return out
