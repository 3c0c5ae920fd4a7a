from PIL import Image

from model.chat_format import IMAGE_INPUT_ID, ChatFormat, Message, create_vision_mask


def test_special_token_ids(tokenizer):
    s = tokenizer.special_tokens
    assert tokenizer.n_words == 128256
    assert (s["<|begin_of_text|>"], s["<|finetune_right_pad_id|>"], s["<|image|>"], s["<|eot_id|>"]) == (128000, 128004, 128011, 128009)
    assert tokenizer.stop_tokens == [128001, 128008, 128009]


def test_round_trip_and_known_ids(tokenizer):
    ids = tokenizer.encode("Hello world", bos=True, eos=False)
    assert ids == [128000, 9906, 1917]
    assert tokenizer.decode(ids[1:]) == "Hello world"


def test_special_token_text_is_plain_text_unless_allowed(tokenizer):
    plain = tokenizer.encode("<|image|>", bos=False, eos=False)
    assert 128011 not in plain and len(plain) > 1
    assert tokenizer.encode("<|image|>", bos=False, eos=False, allow_special=True) == [128011]


def test_completion_layout_puts_bos_before_the_image(tokenizer):
    inp = ChatFormat(tokenizer).encode_content([Image.new("RGB", (4, 4)), "If I had to write a haiku"])
    assert inp.tokens[:2] == [128000, IMAGE_INPUT_ID]
    assert inp.vision.mask == [[1, -1]]


def test_chat_layout_image_at_position_5(tokenizer):
    msg = Message("user", [Image.new("RGB", (4, 4)), "Describe the image."])
    inp = ChatFormat(tokenizer).encode_dialog_prompt([msg])
    assert inp.tokens[:6] == [128000, 128006, 882, 128007, 271, IMAGE_INPUT_ID]
    assert inp.tokens[-4:] == [128006, 78191, 128007, 271]  # open assistant header
    assert inp.vision.mask == [[5, -1]]


def test_text_only_prompt_has_no_vision_input(tokenizer):
    assert ChatFormat(tokenizer).encode_content(["just text"]).vision is None


def test_vision_mask_for_several_images():
    img = 7
    assert create_vision_mask([1, img, 2, 3, img, 4], img) == [[1, 4], [4, 6]]
    # consecutive images all stay visible until the end of the following text
    assert create_vision_mask([1, img, img, 2, 3], img) == [[1, 5], [2, 5]]
    assert create_vision_mask([1, 2], img) == []


def test_chat_layouts_equal_meta_chat_format(tokenizer):
    """Ours against Meta's ChatFormat on the same turns: a system turn, images before, between and
    after text, an assistant turn, and a tool result (whose header Meta writes as "ipython")."""
    import io

    from llama_models.datatypes import RawMediaItem, RawMessage, RawTextItem, StopReason

    from tests.meta_reference import meta_chat_format

    def png(image):
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()

    red, gray = Image.new("RGB", (30, 20), (200, 10, 10)), Image.new("L", (10, 40), 90)
    turns = [("system", ["Be brief."]), ("user", ["Look", red, "and", gray, "?"]),
             ("assistant", ["A red and a gray image."]), ("user", [red, "Again <|eot_id|>"]), ("tool", ["42"])]
    ours = ChatFormat(tokenizer).encode_dialog_prompt([Message(role, content) for role, content in turns])
    meta = meta_chat_format().encode_dialog_prompt([
        RawMessage(role=role, content=[RawTextItem(text=x) if isinstance(x, str) else RawMediaItem(data=png(x)) for x in content],
                   **({"stop_reason": StopReason.end_of_turn} if role == "assistant" else {}))
        for role, content in turns])
    assert ours.tokens == meta.tokens
    assert ours.vision.mask == meta.vision.mask == [[14, 16], [16, 35], [35, 55]]
    assert [image.tobytes() for image in ours.vision.images] == [image.tobytes() for image in meta.vision.images]
