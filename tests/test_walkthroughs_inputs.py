"""walkthroughs/inputs.py: every bad image or prompt ends in a one-line InputError or a correct load."""

import hashlib
import io
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from model import ChatFormat, Message
from model.image_transform import VariableSizeImageTransform
from walkthroughs.inputs import (
    MAX_MEGAPIXELS,
    InputError,
    check_prompt,
    check_transform_size,
    load_image,
    prompt_budget,
    read_prompt_file,
    template_tokens,
)


def noisy(size, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr).convert(mode)


def png_header_only(width, height):
    """A PNG whose header claims width x height; no pixel data at all."""

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def encoded(image, fmt, **kw):
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def assert_clean(err: InputError, *needles):
    msg = str(err)
    assert "\n" not in msg and msg == msg.strip() and msg, msg
    assert "Traceback" not in msg
    for needle in needles:
        assert needle.lower() in msg.lower(), (needle, msg)


# ---------------------------------------------------------------------------------------
# Images that must be refused
# ---------------------------------------------------------------------------------------

JPEG = encoded(noisy((120, 90)), "JPEG")
PNG = encoded(noisy((120, 90)), "PNG")
GIF = encoded(noisy((40, 30), "P"), "GIF")


def _write(data, name):
    def make(d: Path) -> Path:
        path = d / name
        path.write_bytes(data)
        return path

    return make


def _folder(d: Path) -> Path:
    (d / "pics.png").mkdir()
    return d / "pics.png"


BAD_IMAGES = {
    "missing": (lambda d: d / "nope.png", ["not found", "--image"]),
    "folder": (_folder, ["is a folder", "--image"]),
    "zero_bytes": (_write(b"", "empty.png"), ["empty (0 bytes)"]),
    "text_named_png": (_write(b"hello, I am not a picture\n", "fake.png"), ["not an image", "holds text", "hello"]),
    "random_bytes_named_jpg": (_write(bytes(range(256)) * 4, "noise.jpg"), ["not an image", "bytes"]),
    "jpeg_cut_in_half": (_write(JPEG[: len(JPEG) // 2], "half.jpg"), ["truncated", "re-export"]),
    "jpeg_missing_eoi": (_write(JPEG[:-2], "noeoi.jpg"), ["truncated"]),
    "jpeg_header_only": (_write(JPEG[:200], "head.jpg"), ["truncated"]),
    "png_cut_in_half": (_write(PNG[: len(PNG) // 2], "half.png"), ["truncated"]),
    # Pillow decodes these three without complaint: the pixels are all there, the end is not.
    "png_missing_iend": (_write(PNG[:-12], "noiend.png"), ["truncated png"]),
    "png_missing_last_idat_crc": (_write(PNG[:-14], "nocrc.png"), ["truncated"]),
    "png_cut_by_one_byte": (_write(PNG[:-1], "cut1.png"), ["truncated png"]),
    "gif_missing_trailer": (_write(GIF[:-1], "cut.gif"), ["truncated gif"]),
    "bomb_100000x100000": (_write(png_header_only(100_000, 100_000), "bomb.png"), ["decompression bomb", f"{MAX_MEGAPIXELS} megapixels", "10,000 megapixels"]),
    "bomb_in_pillow_warning_range": (_write(png_header_only(10_000, 10_000), "big.png"), [f"{MAX_MEGAPIXELS} megapixels", "downscale"]),
    "over_our_limit_under_pillows": (_write(png_header_only(9_000, 9_000), "81mp.png"), ["9000x9000", f"limit is {MAX_MEGAPIXELS} megapixels"]),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_image_is_one_clean_error(case, tmp_path):
    make, needles = BAD_IMAGES[case]
    with pytest.raises(InputError) as info:
        load_image(make(tmp_path))
    assert_clean(info.value, *needles)


@pytest.mark.parametrize("size", [(5000, 1), (1, 5000), (3000, 1), (1121, 1), (5000, 2)])
def test_too_thin_for_the_transform_is_refused_and_the_transform_really_fails(size, tmp_path):
    path = tmp_path / "thin.png"
    Image.new("RGB", size, (200, 10, 10)).save(path)
    with pytest.raises(InputError) as info:
        load_image(path)
    assert_clean(info.value, f"{size[0]}x{size[1]}", "too thin", "pad its short side")
    # Not our invention: the transform (same arithmetic as Meta's) fails on the raw image.
    with pytest.raises(ValueError, match="height and width must be > 0"):
        VariableSizeImageTransform(560)(Image.new("RGB", size), 4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_too_thin_check_matches_the_transform_exactly(dtype):
    # Near every canvas edge at R=112 (cheap): refused by the check <=> the transform raises.
    longs = sorted({k * 112 + d for k in range(1, 9) for d in (-1, 0, 1)} | {1, 2, 5, 1000, 3000})
    sizes = [(n, s) for n in longs for s in (1, 2, 3)] + [(s, n) for n in longs for s in (1, 2)]
    for size in sizes:
        try:
            check_transform_size(size, 112, 4, dtype)
            refused = False
        except InputError:
            refused = True
        try:
            VariableSizeImageTransform(112, dtype)(Image.new("RGB", size), 4)
            fails = False
        except ValueError:
            fails = True
        assert refused == fails, (size, dtype)


def test_too_thin_suggestion_really_works(tmp_path):
    with pytest.raises(InputError) as info:
        check_transform_size((5000, 1))
    w, h = map(int, str(info.value).split("at least ")[1].split(")")[0].split("x"))
    check_transform_size((w, h))  # the suggested size passes
    chunks, _ = VariableSizeImageTransform(560)(Image.new("RGB", (w, h)), 4)
    assert chunks.shape[1:] == (3, 560, 560)


# ---------------------------------------------------------------------------------------
# Images that load, with the notes they must carry
# ---------------------------------------------------------------------------------------


def _save(image, name, **kw):
    def make(d: Path) -> Path:
        image.save(d / name, **kw)
        return d / name

    return make


def _rgba_transparent():
    im = noisy((64, 48), "RGBA")
    im.putalpha(Image.linear_gradient("L").resize((64, 48)))
    return im


def _la_transparent():
    im = noisy((64, 48), "L").convert("LA")
    im.putalpha(Image.new("L", (64, 48), 0))
    return im


def _p_transparent():
    im = noisy((64, 48), "P")
    im.info["transparency"] = 0
    return im


def _i16(hi):
    arr = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * hi // (64 * 48 - 1)).astype(np.uint16)
    return Image.fromarray(arr)


def _animated_gif(d: Path) -> Path:
    frames = [Image.new("RGB", (32, 24), (i * 20, 255 - i * 20, 0)) for i in range(12)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return d / "anim.gif"


def _exif_rotated(d: Path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6
    noisy((80, 60)).save(d / "rotated.jpg", exif=exif)
    return d / "rotated.jpg"


def _png_exif_rotated(d: Path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 8
    noisy((80, 60)).save(d / "rotated.png", exif=exif)
    return d / "rotated.png"


def _jpeg_named_png(d: Path) -> Path:
    (d / "really_a.jpg.png").write_bytes(JPEG)
    return d / "really_a.jpg.png"


GOOD_IMAGES = {
    "1x1": (_save(Image.new("RGB", (1, 1), (1, 2, 3)), "one.png"), None),
    "1x2": (_save(Image.new("RGB", (1, 2)), "one_by_two.png"), None),
    "5000x3_thin_but_fine": (_save(Image.new("RGB", (5000, 3)), "wide.png"), None),
    "1000x1_thin_but_fine": (_save(Image.new("RGB", (1000, 1)), "line.png"), None),
    "rgb_jpeg": (_save(noisy((100, 80)), "photo.jpg"), None),
    "jpeg_named_png": (_jpeg_named_png, None),
    "rgba_transparent": (_save(_rgba_transparent(), "rgba.png"), "alpha dropped, not composited"),
    "rgba_opaque": (_save(noisy((30, 20), "RGBA"), "opaque.png"), None),
    "la_transparent": (_save(_la_transparent(), "la.png"), "alpha dropped"),
    "L": (_save(noisy((30, 20), "L"), "gray.png"), None),
    "p_with_transparency": (_save(_p_transparent(), "pal.png"), "P image with transparent pixels: alpha dropped"),
    "p_opaque": (_save(noisy((30, 20), "P"), "pal_opaque.png"), None),
    "i16_over_255": (_save(_i16(65535), "deep.png"), "clips them to 0..255"),
    "i16_within_255": (_save(_i16(255), "shallow.png"), None),
    "cmyk_jpeg": (_save(noisy((40, 30), "CMYK"), "print.jpg"), "CMYK image"),
    "cmyk_tiff": (_save(noisy((40, 30), "CMYK"), "print.tif"), "CMYK image"),
    "1bit": (_save(noisy((40, 30), "1"), "bw.png"), None),
    "animated_gif": (_animated_gif, "animated GIF: using frame 1 of 12"),
    "exif_orientation_6": (_exif_rotated, "EXIF orientation 6"),
    "png_exif_orientation_8": (_png_exif_rotated, "EXIF orientation 8"),
}


@pytest.mark.parametrize("case", list(GOOD_IMAGES))
def test_good_image_loads_as_meta_converts_it(case, tmp_path):
    make, note = GOOD_IMAGES[case]
    path = make(tmp_path)
    loaded = load_image(path)
    im = loaded.image
    assert im.mode == "RGB" and im.im is not None  # loaded into memory
    with Image.open(path) as ref:  # Meta's reference: Image.open(...).convert("RGB"), nothing else
        ref_mode, ref_size = ref.mode, ref.size
        expected = ref.convert("RGB")
    assert im.size == expected.size and im.tobytes() == expected.tobytes()
    assert loaded.info == {"path": path.name, "file": str(path), "size": list(ref_size), "mode": ref_mode,
                           "pixels_sha256": hashlib.sha256(expected.tobytes()).hexdigest()}
    if note is None:
        assert loaded.notes == []
    else:
        assert len(loaded.notes) == 1 and note in loaded.notes[0], loaded.notes
        assert "\n" not in loaded.notes[0]
    chunks, (rows, cols) = VariableSizeImageTransform(560)(im, 4)
    assert chunks.shape == (rows * cols, 3, 560, 560) and rows * cols <= 4


def test_exif_orientation_is_reported_not_applied(tmp_path):
    loaded = load_image(_exif_rotated(tmp_path))
    assert loaded.image.size == (80, 60)  # stored 80x60; a viewer would show 60x80
    assert "ignored, as Meta's reference does" in loaded.notes[0] and "rotated 90° clockwise" in loaded.notes[0]


def test_alpha_is_dropped_not_composited(tmp_path):
    im = Image.new("RGBA", (4, 4), (10, 20, 30, 0))  # fully transparent dark pixels
    im.save(tmp_path / "clear.png")
    loaded = load_image(tmp_path / "clear.png")
    assert loaded.image.getpixel((0, 0)) == (10, 20, 30)  # not white, as HF's compositing would give
    assert "Hugging Face" in loaded.notes[0]


def test_i16_note_counts_clipped_pixels(tmp_path):
    Image.fromarray(np.array([[0, 100, 255, 256, 65535, 7]], dtype=np.uint16)).save(tmp_path / "d.png")
    loaded = load_image(tmp_path / "d.png")
    assert loaded.image.getpixel((3, 0)) == (255, 255, 255) and loaded.image.getpixel((1, 0)) == (100, 100, 100)
    assert "values 0..65535" in loaded.notes[0] and "(2 pixels, 33.3%, clipped)" in loaded.notes[0]
    almost = np.full((200, 300), 1000, dtype=np.uint16)
    almost[0, :9] = 7  # 59991 of 60000 clipped: not "100%"
    Image.fromarray(almost).save(tmp_path / "e.png")
    assert "(59991 pixels, 99.9%, clipped)" in load_image(tmp_path / "e.png").notes[0]


def test_a_float_image_of_values_in_0_to_1_gets_a_note(tmp_path):
    Image.fromarray(np.linspace(0, 1, 600, dtype=np.float32).reshape(20, 30), mode="F").save(tmp_path / "f.tiff")
    loaded = load_image(tmp_path / "f.tiff")
    assert loaded.image.getextrema()[0] == (0, 1)  # as Meta's reference converts it: almost black
    assert "values 0..1" in loaded.notes[0] and "almost black" in loaded.notes[0]


def test_bundled_sample_is_the_default():
    loaded = load_image(None)
    assert loaded.info["path"] == "sample.png (bundled)" and loaded.info["file"] == "bundled"
    assert loaded.image.mode == "RGB" and loaded.notes == []


# ---------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------

PROMPT_CASES = {
    "empty": ("", 100, False, ["empty", "--prompt"]),
    "whitespace_only": (" \n\t  ", 100, False, ["only whitespace", "--prompt"]),
    "too_long": (" ".join(["word"] * 1000), 500, False, ["1000 tokens", "limit here is 500", "shorten it by 500"]),
    "lone_surrogate_from_bad_argv": ("caf\udce9 au lait", 100, False, ["not valid unicode", "character 3"]),
    "image_token_with_special_allowed": ("look: <|image|> there", 100, True, ["<|image|>", "no image fills"]),
}


@pytest.mark.parametrize("case", list(PROMPT_CASES))
def test_bad_prompt_is_one_clean_error(case, tokenizer):
    text, limit, allow, needles = PROMPT_CASES[case]
    with pytest.raises(InputError) as info:
        check_prompt(text, tokenizer, limit, allow_special=allow)
    assert_clean(info.value, *needles)


def test_prompt_at_the_limit_passes(tokenizer):
    text = "word " * 99 + "word"
    n = len(tokenizer.encode(text, bos=False, eos=False))
    assert check_prompt(text, tokenizer, n) == []
    with pytest.raises(InputError, match=f"is {n} tokens; the limit here is {n - 1}.* shorten it by 1 token or"):
        check_prompt(text, tokenizer, n - 1)


def test_special_strings_stay_plain_text_with_a_note(tokenizer):
    text = "Say <|eot_id|> then <|image|> please"
    notes = check_prompt(text, tokenizer, 100)
    assert len(notes) == 1 and "<|eot_id|>, <|image|>" in notes[0] and "kept as plain text" in notes[0]
    assert "--allow-special" in notes[0]
    inp = ChatFormat(tokenizer).encode_content([Image.new("RGB", (4, 4)), text])
    assert inp.vision.mask == [[1, -1]]  # one image slot: the text's <|image|> is ordinary tokens
    assert tokenizer.eot_id not in inp.tokens


def test_special_allowed_becomes_control_tokens(tokenizer):
    notes = check_prompt("end <|eot_id|>", tokenizer, 100, allow_special=True)
    assert len(notes) == 1 and "control tokens" in notes[0]


def test_template_tokens_count_the_input_besides_the_text(tokenizer):
    fmt = ChatFormat(tokenizer)
    for chat in (True, False):
        template = template_tokens(tokenizer, chat=chat)
        content = [Image.new("RGB", (4, 4)), "word"]  # one text token
        inp = fmt.encode_dialog_prompt([Message("user", content)]) if chat else fmt.encode_content(content)
        assert len(inp.tokens) == template + 1
        assert prompt_budget(tokenizer, template + 2, chat=chat) == 1  # the "use at least" of run's error


def test_prompt_budget_fills_the_context_exactly(tokenizer):
    for chat in (True, False):
        budget = prompt_budget(tokenizer, 64, chat=chat)
        text = " ".join(["word"] * budget)
        assert len(tokenizer.encode(text, bos=False, eos=False)) == budget
        check_prompt(text, tokenizer, budget)
        fmt = ChatFormat(tokenizer)
        content = [Image.new("RGB", (4, 4)), text]
        inp = fmt.encode_dialog_prompt([Message("user", content)]) if chat else fmt.encode_content(content)
        assert len(inp.tokens) == 63  # the run's check: n < max_seq_len


# ---------------------------------------------------------------------------------------
# Prompt files
# ---------------------------------------------------------------------------------------


def test_prompt_file_invalid_utf8_names_the_byte_offset(tmp_path):
    (tmp_path / "p.txt").write_bytes(b"first line\nsecond \xff line\n")
    with pytest.raises(InputError) as info:
        read_prompt_file(tmp_path / "p.txt")
    assert_clean(info.value, "not valid utf-8", "0xff at offset 18", "line 2", "save it as utf-8")


@pytest.mark.parametrize(
    "data, needles",
    [
        ("hi there".encode("utf-16"), ["utf-16", "save it as utf-8"]),
        (b"\xe2\x82", ["0xe2 at offset 0"]),  # a cut multi-byte character
    ],
)
def test_prompt_file_other_encodings(tmp_path, data, needles):
    (tmp_path / "p.txt").write_bytes(data)
    with pytest.raises(InputError) as info:
        read_prompt_file(tmp_path / "p.txt")
    assert_clean(info.value, *needles)


def test_prompt_file_missing_and_folder(tmp_path):
    with pytest.raises(InputError) as info:
        read_prompt_file(tmp_path / "none.txt")
    assert_clean(info.value, "not found", "--prompt-file")
    with pytest.raises(InputError) as info:
        read_prompt_file(tmp_path)
    assert_clean(info.value, "is a folder")
    assert "file file" not in str(info.value)


def test_prompt_from_a_pipe_and_from_standard_input(tmp_path):
    import io
    import os
    import threading

    fifo = tmp_path / "p.fifo"  # what a shell's <(command) hands over
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes("from a pipe\n".encode()), daemon=True)  # never holds pytest up
    writer.start()
    assert read_prompt_file(fifo) == "from a pipe"
    writer.join(timeout=5)
    assert read_prompt_file("-", stdin=io.BytesIO("from stdin ☕\n".encode())) == "from stdin ☕"
    with pytest.raises(InputError) as info:
        read_prompt_file("-", stdin=io.BytesIO(b"x" * (8 * 2**20 + 1)))
    assert_clean(info.value, "standard input is over 8 MiB")


def test_prompt_file_reads_utf8_dropping_bom_and_one_newline(tmp_path):
    (tmp_path / "p.txt").write_bytes("\ufeffWhat is in this café?\n\n".encode("utf-8"))
    assert read_prompt_file(tmp_path / "p.txt") == "What is in this café?\n"


# ---------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------

MODES = ["RGB", "RGBA", "L", "LA", "P", "1", "I;16", "CMYK"]


def _make(mode, size):
    if mode == "I;16":
        return Image.new("I;16", size, 300)
    if mode == "CMYK":
        return Image.new("CMYK", size, (10, 20, 30, 40))
    return Image.new("RGB", size, (30, 120, 200)).convert(mode)


@settings(max_examples=25, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(width=st.integers(1, 3000), height=st.integers(1, 3000), mode=st.sampled_from(MODES))
@example(width=3000, height=1, mode="P")
@example(width=1, height=2999, mode="I;16")
@example(width=3000, height=3000, mode="I;16")
def test_any_size_and_mode_loads_and_transforms_or_is_refused_exactly(width, height, mode):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("x.tif" if mode == "CMYK" else "x.png")
        _make(mode, (width, height)).save(path, **({"compress_level": 1} if path.suffix == ".png" else {}))
        try:
            loaded = load_image(path, chunk_size=112, max_num_chunks=4)
        except InputError as err:
            assert_clean(err, "too thin")  # the only refusal a sound file can get
            with pytest.raises(ValueError, match="height and width must be > 0"):
                VariableSizeImageTransform(112)(Image.new("RGB", (width, height)), 4)
            return
    assert loaded.image.mode == "RGB" and loaded.image.size == (width, height)
    chunks, (rows, cols) = VariableSizeImageTransform(112)(loaded.image, 4)
    assert chunks.shape == (rows * cols, 3, 112, 112) and 1 <= rows * cols <= 4
    assert chunks.dtype == torch.bfloat16 and torch.isfinite(chunks.float()).all()


@settings(max_examples=25, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(), allow=st.booleans())
def test_any_text_prompt_checks_and_encodes_or_is_one_clean_error(text, allow, tokenizer):
    try:
        notes = check_prompt(text, tokenizer, 200, allow_special=allow)
    except InputError as err:
        assert "\n" not in str(err)
        return
    assert all("\n" not in n for n in notes)
    inp = ChatFormat(tokenizer, allow_special=allow).encode_content([Image.new("RGB", (4, 4)), text])
    assert inp.vision.mask == [[1, -1]] and len(inp.tokens) <= 2 + 200


@settings(max_examples=25, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.sampled_from(["<|image|>", "<|eot_id|>", "<|begin_of_text|>", "<|", "|>", "a", " ", "\n", "é", "\x00"]), max_size=20).map("".join))
def test_special_token_soup_never_adds_an_image_slot(text, tokenizer):
    for allow in (False, True):
        try:
            check_prompt(text, tokenizer, 200, allow_special=allow)
        except InputError:
            continue
        inp = ChatFormat(tokenizer, allow_special=allow).encode_content([Image.new("RGB", (4, 4)), text])
        assert inp.vision.mask == [[1, -1]]


def test_a_big_endian_16_bit_tiff_loads_with_its_note(tmp_path):
    # Pillow's getextrema refuses mode I;16B: the note used to crash the run.
    Image.frombytes("I;16B", (4, 1), np.array([0, 300, 65535, 7], dtype=">u2").tobytes()).save(tmp_path / "be.tiff")
    loaded = load_image(tmp_path / "be.tiff")
    assert loaded.info["mode"] == "I;16B" and loaded.image.mode == "RGB"
    assert "values 0..65535" in loaded.notes[0] and "(2 pixels, 50%, clipped)" in loaded.notes[0]


def test_nan_and_inf_pixels_are_counted_not_shown_as_the_range(tmp_path):
    pixels = np.array([[np.nan, np.inf, -np.inf, 300.0, 20.0, 1.5]], dtype=np.float32)
    Image.fromarray(pixels, mode="F").save(tmp_path / "odd.tiff")
    note = load_image(tmp_path / "odd.tiff").notes[0]
    assert "values 1.5..300" in note and "(1 pixel, 16.7%, clipped)" in note
    assert "; 3 more pixels are NaN or infinite, read as 0 (NaN, -inf) or 255 (+inf); save it as 8-bit" in note and "nan" not in note
    Image.fromarray(pixels[:, [0, 4, 5]], mode="F").save(tmp_path / "in_range.tiff")
    assert load_image(tmp_path / "in_range.tiff").notes == [
        'F image with 1 NaN or infinite pixel: Pillow\'s convert("RGB"), which Meta\'s reference uses, reads them as 0 (NaN, -inf)'
        " or 255 (+inf); re-export it with finite values"]


def test_a_lab_image_has_no_alpha_to_drop(tmp_path):
    # LAB's bands are L, A and B: its A is a colour, not transparency.
    Image.new("LAB", (8, 8), (50, 10, 200)).save(tmp_path / "lab.tiff")
    assert not any("alpha" in note for note in load_image(tmp_path / "lab.tiff").notes)


def test_premultiplied_alpha_is_read_from_its_last_band():
    # La and RGBa name their alpha "a": getchannel("A") and convert("RGBA") both fail on La, so
    # its note was silently skipped.
    from walkthroughs.inputs import _alpha_note

    see_through = Image.merge("La", (Image.new("L", (4, 4), 90), Image.new("L", (4, 4), 0)))
    assert "La image with transparent pixels: alpha dropped" in _alpha_note(see_through)
    assert _alpha_note(Image.merge("La", (Image.new("L", (4, 4), 90), Image.new("L", (4, 4), 255)))) is None
