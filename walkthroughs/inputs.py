"""Check what the user hands `llama-trace run` before any model work: the image and the prompt.

Every problem ends in an `InputError` with a one-line message that says what is wrong and
what to do (the CLI prints it and exits 2); everything the run does to the input that the
user might not expect comes back as a note. Faithfulness to Meta's reference decides what
is done to an image: `llama_models/llama3/chat_format.py` does
`PIL.Image.open(...).convert("RGB")` and nothing else, so

- EXIF orientation is *not* applied (no `ImageOps.exif_transpose`); a note says so;
- alpha is dropped, not composited (Hugging Face's processor composites onto white); a note
  says so when some pixel is actually transparent;
- 16/32-bit images go through Pillow's `convert("RGB")`, which clips to 0..255 rather than
  scaling; a note says when values were clipped;
- an animated or multi-page file gives its first frame; a note says so.

What this module refuses that Meta's code would not: truncated files (Pillow can decode
some of them partially; `ImageFile.LOAD_TRUNCATED_IMAGES` stays off), images over
`MAX_MEGAPIXELS`, and images so thin that the image transform would resize one side to 0
pixels (Meta's transform fails on those too, with Pillow's
"ValueError: height and width must be > 0").

Public API
----------
    InputError                                   ValueError with a one-line, actionable message
    LoadedImage(image, info, notes)              RGB image (loaded), the info the run log records, notes
    load_image(path, *, chunk_size=560, max_num_chunks=4, dtype=torch.bfloat16) -> LoadedImage
    check_transform_size(size, chunk_size, max_num_chunks, dtype)   raises InputError
    check_prompt(text, tokenizer, max_tokens, allow_special=False) -> notes
    template_tokens(tokenizer, chat, n_images=1) -> int   the model input's tokens besides the prompt text
    prompt_budget(tokenizer, max_seq_len, chat, n_images=1) -> int   max_tokens for check_prompt
    read_prompt_file(path, stdin=None) -> str       a prompt file, a pipe, or standard input for "-"
    read_text_file(path, what, flag, stdin=None) -> str   the same for any text a flag names (quiz answers)
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from model import image_transform

from .sample_image import SAMPLE_IMAGE
from .summary import plural, visible

MAX_MEGAPIXELS = 64  # our limit, below Pillow's own bomb check (~89.5 MP warns, ~179 MP fails)
MAX_PIXELS = MAX_MEGAPIXELS * 1_000_000
MAX_TEXT_FILE_BYTES = 8 * 1024 * 1024
ALLOW_SPECIAL_FLAG = "--allow-special"  # named in the note about special-token strings

# EXIF tag 0x0112: what a viewer does to show the stored pixels upright.
EXIF_ORIENTATION_TAG = 0x0112
EXIF_ORIENTATIONS = {
    2: "mirrored left-right",
    3: "rotated 180°",
    4: "mirrored top-bottom",
    5: "mirrored and rotated 90°",
    6: "rotated 90° clockwise",
    7: "mirrored and rotated 270°",
    8: "rotated 90° counter-clockwise",
}
HIGH_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")  # modes with an alpha band (Pillow's has_transparency_data)
SURROGATE = re.compile("[\ud800-\udfff]")  # what Python makes of argv bytes that are not UTF-8


class InputError(ValueError):
    """Bad input for a run; the message is one line that says what is wrong and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


@dataclass
class LoadedImage:
    image: Image.Image  # mode RGB, pixels loaded, file closed
    info: dict  # path, file, size (of the file's image), mode (of the file's image), as the run log records them
    notes: list[str] = field(default_factory=list)


def one_line(text: str) -> str:
    """Collapse whitespace (newlines included) so that a message prints as one line."""
    return re.sub(r"\s+", " ", str(text)).strip()


def _show(path: Path) -> str:
    """A path for a message: control characters escaped (line breaks too) so that it stays on one line."""
    return visible(str(path)).replace("\n", "\\n")


def _pil_error(err: BaseException) -> str:
    return one_line(f"{err.__class__.__name__}: {err}")[:200]


# ---------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------


def _check_file(path: Path, what: str, flag: str, streams: bool = False) -> int:
    """Refuse paths that are not readable regular files (`streams`: pipes and devices too, e.g.
    a shell's `<(command)`); return the size in bytes."""
    shown = _show(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"{what} not found: {shown}; pass an existing file with {flag}") from None
    except NotADirectoryError:
        raise InputError(f"{what} not found: {shown} (a parent is not a folder); pass an existing file with {flag}") from None
    except OSError as err:
        raise InputError(f"cannot access {shown} ({err.strerror or err}); pass a readable file with {flag}") from None
    a_file = f"{_article(what)} {what}" if what.endswith("file") else f"{_article(what)} {what} file"
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{shown} is a folder, not a file; pass {a_file} with {flag}")
    if not stat.S_ISREG(st.st_mode) and not streams:
        raise InputError(f"{shown} is not a regular file (a pipe or device?); pass {a_file} with {flag}")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read {shown}: permission denied; fix its permissions or pass another file with {flag}")
    return st.st_size


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _read_head_tail(path: Path, n: int = 4096) -> tuple[bytes, bytes]:
    with open(path, "rb") as f:
        head = f.read(n)
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - n))
        tail = f.read(n)
    return head, tail


def _describe_head(head: bytes) -> str:
    sample = head[:16]
    try:
        text = head[:512].decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.strip() and all(c.isprintable() or c in "\r\n\t" for c in text):
        snippet = one_line(text)[:24]
        return f'it holds text ("{snippet}…")' if len(one_line(text)) > 24 else f'it holds text ("{snippet}")'
    return f"it starts with bytes {sample!r}"


def _bomb_message(path: Path, err: BaseException) -> str:
    m = re.search(r"\((\d+) pixels\)", str(err))
    claimed = f"{int(m.group(1)) / 1e6:,.0f} megapixels" if m else "more pixels than Pillow allows"
    return (
        f"{_show(path)} claims {claimed} (a possible decompression bomb); the limit is {MAX_MEGAPIXELS} megapixels"
        f" and nothing was decoded: downscale it first"
    )


def _open(path: Path) -> Image.Image:
    """Image.open with Pillow's bomb warning turned into an error and other warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(path)


def _check_complete(path: Path, fmt: str | None, tail: bytes) -> None:
    """Refuse files whose end is missing although Pillow decoded them (PNG, GIF)."""
    shown = _show(path)
    if fmt == "PNG":
        # A PNG cut inside its last IDAT's checksum or its IEND chunk still loads in Pillow.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as im:
                    im.verify()
        except Exception as err:
            raise InputError(f"{shown} is a truncated or damaged PNG ({_pil_error(err)}); re-export or re-download it") from None
        end = tail.rfind(b"IEND")
        if end < 0 or len(tail) < end + 8:
            raise InputError(f"{shown} is a truncated PNG (its IEND end marker is missing or cut); re-export or re-download it")
    elif fmt == "GIF":
        if not tail.rstrip(b"\x00").endswith(b";"):
            raise InputError(f"{shown} is a truncated GIF (its trailer byte is missing); re-export or re-download it")


def _alpha_note(im: Image.Image) -> str | None:
    """A note when the file has transparency that convert("RGB") will drop."""
    has_alpha = im.mode in ALPHA_MODES  # not "A" in its bands: LAB's A is a colour
    if not has_alpha and "transparency" not in im.info:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # alpha is the last band ("a" in the premultiplied La, RGBa)
            alpha = im.getchannel(im.getbands()[-1]) if has_alpha else im.convert("RGBA").getchannel("A")
        lo, _ = alpha.getextrema()
    except Exception:
        return None
    if lo == 255:
        return None  # every pixel opaque: nothing is lost
    return (
        f"{im.mode} image with transparent pixels: alpha dropped, not composited, as Meta's reference does (.convert(\"RGB\")),"
        f" so transparent areas show the colour stored under them; Hugging Face's processor composites onto white instead"
    )


def _clip_note(im: Image.Image) -> str | None:
    """A note when convert("RGB") clips a 16/32-bit image's values to 0..255, or meets NaN or ±inf."""
    if im.mode not in HIGH_BIT_MODES:
        return None
    import numpy as np

    values = np.asarray(im)  # every high-bit mode (Pillow's getextrema refuses I;16B)
    finite = np.isfinite(values)
    unreadable = values.size - int(np.count_nonzero(finite))  # NaN and ±inf, in an F image
    converts = "Pillow's convert(\"RGB\"), which Meta's reference uses,"
    as_0_or_255 = "as 0 (NaN, -inf) or 255 (+inf)"
    if unreadable == values.size:
        return f"{im.mode} image with no finite values: {converts} reads them {as_0_or_255}; re-export it with finite values"
    values = values[finite] if unreadable else values
    lo, hi = float(values.min()), float(values.max())
    odd = f"; {plural(unreadable, 'more pixel')} {'is' if unreadable == 1 else 'are'} NaN or infinite, read {as_0_or_255}" if unreadable else ""
    if im.mode == "F" and 0 <= lo and 0 < hi <= 1:  # floats meant as 0..1, most likely
        return (f"F (float) image with values {lo:g}..{hi:g}: {converts} reads them as 0..255, so the image is almost"
                f" black{odd}; if they mean 0..1, save it as 8-bit (0..255)")
    if lo >= 0 and hi <= 255:
        return None if not unreadable else (
            f"{im.mode} image with {unreadable} NaN or infinite {'pixel' if unreadable == 1 else 'pixels'}: {converts}"
            f" reads them {as_0_or_255}; re-export it with finite values")
    clipped = int(np.count_nonzero((values < 0) | (values > 255)))
    share = f"{100 * clipped / (values.size + unreadable):.3g}"
    if share == "100" and clipped < values.size + unreadable:  # 59991 of 60000 is not all of them
        share = "99.9"
    return (f"{im.mode} image with values {lo:g}..{hi:g}: {converts} clips them to 0..255 instead of scaling"
            f" ({plural(clipped, 'pixel')}, {share}%, clipped){odd}; save it as 8-bit to keep the detail")


def _orientation_note(im: Image.Image) -> str | None:
    try:
        orientation = im.getexif().get(EXIF_ORIENTATION_TAG)
    except Exception:
        return None
    if orientation not in EXIF_ORIENTATIONS:
        return None
    return (
        f"EXIF orientation {orientation} (viewers show it {EXIF_ORIENTATIONS[orientation]}) ignored, as Meta's reference does:"
        f" the model sees the {im.size[0]}x{im.size[1]} pixels as stored; rotate the file itself if it should look upright"
    )


def _frames_note(im: Image.Image) -> str | None:
    try:
        n = int(getattr(im, "n_frames", 1))
    except Exception:
        return None
    if n <= 1:
        return None
    fmt = im.format or "image"
    kind = f"multi-page {fmt}" if fmt in ("TIFF", "MPO", "DCX", "FLI", "ICNS", "ICO") else f"animated {fmt}"
    return f"{kind}: using frame 1 of {n}, as Meta's reference does"


def _cmyk_note(im: Image.Image) -> str | None:
    if im.mode != "CMYK":
        return None
    return "CMYK image: converted to RGB with Pillow's plain formula and no colour profile, as Meta's reference does; colours may differ from a viewer's"


def check_transform_size(
    size: tuple[int, int], chunk_size: int = 560, max_num_chunks: int = 4, dtype: torch.dtype = torch.bfloat16
) -> None:
    """Refuse an image size that the image transform (Meta's and ours) would resize to 0 pixels on a side.

    Meta's `VariableSizeImageTransform` floors the short side after scaling to its canvas; for
    very thin images (e.g. 5000x1, 1x5000, or 1121x1 in bf16 at 560) that is 0 and Pillow raises
    "ValueError: height and width must be > 0". The canvas choice runs in `dtype`, as the model's.
    """
    new = _resized_size(size, chunk_size, max_num_chunks, dtype)
    if min(new) > 0:
        return
    width, height = size
    long_side, short_side = max(size), min(size)
    fix = ""
    start = max(short_side + 1, long_side // (max_num_chunks * chunk_size))
    for s in range(start, start + 256):
        candidate = (width, s) if width >= height else (s, height)
        if min(_resized_size(candidate, chunk_size, max_num_chunks, dtype)) > 0:
            fix = f" (to at least {candidate[0]}x{candidate[1]})"
            break
    raise InputError(
        f"the image is {width}x{height}: too thin for the model's image transform, which would resize it to"
        f" {new[0]}x{new[1]} (Meta's reference fails on it too: height and width must be > 0); pad its short side{fix} or crop it"
    )


def _resized_size(size: tuple[int, int], chunk_size: int, max_num_chunks: int, dtype: torch.dtype) -> tuple[int, int]:
    """The size `resize_without_distortion` gives, computed with the model's own functions."""
    resolutions = image_transform.find_supported_resolutions(max_num_chunks, chunk_size)
    canvas = image_transform.get_best_fit(size, resolutions, dtype)
    width, height = size
    target = (min(max(width, chunk_size), canvas[0]), min(max(height, chunk_size), canvas[1]))
    return image_transform.get_max_res_without_distortion(size, target)


def load_image(
    path: Path | None,
    *,
    chunk_size: int = 560,
    max_num_chunks: int = 4,
    dtype: torch.dtype = torch.bfloat16,
) -> LoadedImage:
    """Open, fully decode and check an image, then convert it to RGB as Meta's reference does.

    `path=None` gives the bundled sample. `chunk_size`, `max_num_chunks` and `dtype` are the
    model's (ModelArgs.vision_chunk_size, .vision_max_num_chunks, the run's dtype); they decide
    which sizes are too thin for the image transform. Raises InputError.
    """
    path = Path(path) if path is not None else SAMPLE_IMAGE
    shown = _show(path)
    n_bytes = _check_file(path, "image", "--image")
    if n_bytes == 0:
        raise InputError(f"{shown} is empty (0 bytes); pass a PNG or JPEG with --image")
    try:
        head, tail = _read_head_tail(path)
    except OSError as err:
        raise InputError(f"cannot read {shown} ({err.strerror or err}); pass a readable image with --image") from None

    notes: list[str] = []
    try:
        im = _open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InputError(_bomb_message(path, err)) from None
    except Image.UnidentifiedImageError:
        raise InputError(f"{shown} is not an image Pillow can read: {_describe_head(head)}; pass a PNG or JPEG with --image") from None
    except Exception as err:  # PIL raises many types for broken headers
        raise InputError(f"cannot read {shown} as an image ({_pil_error(err)}); pass a PNG or JPEG with --image") from None

    with im:
        width, height = im.size
        fmt = im.format
        if width <= 0 or height <= 0:
            raise InputError(f"{shown} says it is {width}x{height} pixels; pass an image with at least 1x1 pixels")
        if width * height > MAX_PIXELS:
            raise InputError(
                f"{shown} is {width}x{height} ({width * height / 1e6:,.0f} megapixels); the limit is {MAX_MEGAPIXELS} megapixels"
                f" and nothing was decoded: downscale it first"
            )
        check_transform_size((width, height), chunk_size, max_num_chunks, dtype)
        mode = im.mode
        frames_note = _frames_note(im)
        if frames_note is not None:
            im.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise InputError(_bomb_message(path, err)) from None
        except MemoryError:
            raise InputError(f"not enough memory to decode {shown} ({width}x{height}); downscale it first") from None
        except Exception as err:
            raise InputError(
                f"{shown} is truncated or damaged ({_pil_error(err)}); re-export or re-download it"
            ) from None
        _check_complete(path, fmt, tail)
        orientation_note = _orientation_note(im)  # after load: a PNG's eXIf chunk may follow its pixels
        mode = im.mode  # a GIF frame can change mode on load
        for note in (frames_note, orientation_note, _cmyk_note(im), _alpha_note(im), _clip_note(im)):
            if note:
                notes.append(note)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image = im.convert("RGB")  # exactly Meta's conversion: no exif_transpose, no compositing
        except Exception as err:
            raise InputError(f"cannot convert {shown} ({mode}) to RGB ({_pil_error(err)}); save it as an 8-bit RGB PNG or JPEG") from None
    image.load()  # convert() returns a new, detached image, even for RGB files

    bundled = path == SAMPLE_IMAGE
    info = {
        "path": "sample.png (bundled)" if bundled else path.name,
        "file": "bundled" if bundled else str(path),
        "size": [width, height],
        "mode": mode,
        "pixels_sha256": pixels_sha256(image),
    }
    return LoadedImage(image, info, notes)


def pixels_sha256(image: Image.Image) -> str:
    """The SHA-256 of an RGB image's pixels, row by row: which image a log traced, whatever file
    held it (`render` checks a page's pictures against it)."""
    return hashlib.sha256(image.tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------


def template_tokens(tokenizer, chat: bool, n_images: int = 1) -> int:
    """Tokens of the model input around the prompt text: BOS, the image tokens and, in the chat
    layout, the headers and `<|eot_id|>`. Text items are tokenized on their own, so the text's
    tokens simply add to these."""
    from model import ChatFormat, Message

    fmt = ChatFormat(tokenizer)
    content = [Image.new("RGB", (1, 1))] * n_images + [""]
    inp = fmt.encode_dialog_prompt([Message("user", content)]) if chat else fmt.encode_content(content)
    return len(inp.tokens)


def prompt_budget(tokenizer, max_seq_len: int, chat: bool, n_images: int = 1) -> int:
    """The most prompt-text tokens that keep the whole model input under `max_seq_len`: the run
    needs `len(tokens) < max_seq_len` (one position for the next token), and the template
    (`template_tokens`) takes the rest."""
    return max_seq_len - 1 - template_tokens(tokenizer, chat, n_images)


def check_prompt(text: str, tokenizer, max_tokens: int, allow_special: bool = False) -> list[str]:
    """Check a prompt; return notes for the user, or raise InputError.

    `max_tokens` is the budget for the prompt text's own tokens (see `prompt_budget`). No
    truncation ever happens: a prompt over the budget is an error that names both numbers.
    Special-token strings (`<|image|>`, `<|eot_id|>`, …) are plain text unless
    `allow_special`, as in Meta's default; with `allow_special`, `<|image|>` is refused,
    since it would open an image slot that no image fills.
    """
    if not isinstance(text, str):
        raise InputError(f"the prompt must be text, not {type(text).__name__}")
    if text == "":
        raise InputError("the prompt is empty; pass some text with --prompt")
    if not text.strip():
        raise InputError(f"the prompt is only whitespace ({len(text)} characters); pass some text with --prompt")
    bad = SURROGATE.search(text)
    if bad is not None:
        raise InputError(
            f"the prompt is not valid Unicode at character {bad.start()} (a byte that is not UTF-8, or a lone surrogate);"
            f" re-type it or save it as UTF-8"
        )
    notes: list[str] = []
    found = sorted({name for name in tokenizer.special_tokens if name in text}, key=text.index)
    if found:
        names = ", ".join(found)
        if allow_special:
            if "<|image|>" in found:
                raise InputError(
                    "the prompt contains <|image|> and special tokens are allowed, so it would open an image slot"
                    " that no image fills; remove it (the image comes from --image) or leave special tokens off"
                )
            notes.append(f"the prompt's {names} became control tokens (special tokens allowed)")
        else:
            notes.append(
                f"the prompt contains {names}: kept as plain text (ordinary tokens, as Meta's default does);"
                f" pass {ALLOW_SPECIAL_FLAG} to read them as control tokens"
            )
    try:
        n = len(tokenizer.encode(text, bos=False, eos=False, allow_special=allow_special))
    except Exception as err:  # tiktoken should not fail on valid str; say so cleanly if it does
        raise InputError(f"the tokenizer cannot encode the prompt ({_pil_error(err)}); simplify the text") from None
    if n > max_tokens:
        raise InputError(
            f"the prompt is {n} tokens; the limit here is {max_tokens} (the model's context here, max_seq_len, less the template);"
            f" shorten it by {plural(n - max_tokens, 'token')} or raise --max-seq-len; nothing is cut off silently"
        )
    return notes


def read_prompt_file(path: Path | str, stdin=None) -> str:
    """Read a prompt from a UTF-8 file, a pipe, or standard input for "-" (`stdin`: a binary
    stream, default sys.stdin's); a UTF-8 BOM and one final newline are dropped.

    Invalid UTF-8 raises InputError naming the byte offset, line and column.
    """
    return read_text_file(path, "prompt file", "--prompt-file", stdin)


def read_text_file(path: Path | str, what: str, flag: str, stdin=None) -> str:
    """Read UTF-8 text a command-line flag names (`flag`, e.g. --answers; `what`: how errors call
    it, e.g. "answers file") from a file, a pipe, or standard input for "-" (`stdin`: a binary
    stream, default sys.stdin's), up to MAX_TEXT_FILE_BYTES; a UTF-8 BOM and one final newline are
    dropped. Every problem is an InputError naming the flag (invalid UTF-8: the byte's offset,
    line and column)."""
    if str(path) == "-":
        shown = "standard input"
        source = stdin if stdin is not None else sys.stdin.buffer
        data = source.read(MAX_TEXT_FILE_BYTES + 1)
    else:
        path = Path(path)
        shown = _show(path)
        _check_file(path, what, flag, streams=True)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_TEXT_FILE_BYTES + 1)
        except OSError as err:
            raise InputError(f"cannot read {shown} ({err.strerror or err}); pass a readable file with {flag}") from None
    if len(data) > MAX_TEXT_FILE_BYTES:
        raise InputError(f"{what} {shown} is over {MAX_TEXT_FILE_BYTES // 2**20} MiB, the limit: pass a shorter file")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(f"{what} {shown} is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        offset = err.start
        line = data.count(b"\n", 0, offset) + 1
        column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
        raise InputError(
            f"{what} {shown} is not valid UTF-8: byte 0x{data[offset]:02x} at offset {offset}"
            f" (line {line}, byte {column} of the line); save it as UTF-8"
        ) from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    return text
