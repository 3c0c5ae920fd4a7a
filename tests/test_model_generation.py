"""Generation against Meta's own decoding loop (Llama3.generate) on the same random weights."""

import copy

import pytest
import torch
from PIL import Image

import meta_reference as mr
from model import ChatFormat, Message, build_model, get_preset
from model.generation import generate, sample_top_p

TINY = get_preset("tiny")


@pytest.fixture(scope="module")
def pair():
    ours = build_model(TINY, device="cpu", dtype=torch.float32, seed=0)
    theirs = mr.build_meta_model(TINY, dtype=torch.float32)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


def prompt(tokenizer, with_image=True):
    content = ([Image.effect_noise((400, 300), 60).convert("RGB")] if with_image else []) + ["What is in the picture?"]
    return ChatFormat(tokenizer).encode_dialog_prompt([Message("user", content)])


def meta_tokens(theirs, inp, **kw):
    llama = mr.meta_generator(theirs)
    with mr.meta_default_dtype(torch.float32):
        steps = list(llama.generate([copy.deepcopy(inp)], **kw))
    return [r[0].token for r in steps]


def our_tokens(ours, tokenizer, inp, **kw):
    return [int(s.next_token[0]) for s in generate(ours, inp, tokenizer.pad_id, tokenizer.stop_tokens, **kw)]


@pytest.mark.parametrize("with_image", [True, False], ids=["image", "text-only"])
def test_greedy_generation_equals_meta(pair, tokenizer, with_image):
    ours, theirs = pair
    inp = prompt(tokenizer, with_image)
    expected = meta_tokens(theirs, inp, temperature=0.0, max_gen_len=12)
    assert our_tokens(ours, tokenizer, inp, temperature=0.0, max_gen_len=12) == expected
    assert len(expected) == 12


def test_top_p_sampling_equals_meta_with_the_same_seed(pair, tokenizer):
    ours, theirs = pair
    inp = prompt(tokenizer)
    torch.manual_seed(7)
    expected = meta_tokens(theirs, inp, temperature=0.8, top_p=0.9, max_gen_len=8)
    torch.manual_seed(7)
    assert our_tokens(ours, tokenizer, inp, temperature=0.8, top_p=0.9, max_gen_len=8) == expected


def test_stops_at_a_stop_token(pair, tokenizer):
    ours, _ = pair
    inp = prompt(tokenizer)
    calls = []

    def eot_wins_on_third_step(module, args, out):  # a forward hook: the logits of step 3 favour <|eot_id|>
        calls.append(1)
        if len(calls) == 3:
            out = out.clone()
            out[..., tokenizer.eot_id] = 1e4
        return out

    handle = ours.text_model.output.register_forward_hook(eot_wins_on_third_step)
    try:
        steps = list(generate(ours, inp, tokenizer.pad_id, tokenizer.stop_tokens, max_gen_len=10))
    finally:
        handle.remove()
    assert len(steps) == 3 and steps[-1].finished
    assert int(steps[-1].next_token[0]) == tokenizer.eot_id


def test_sample_top_p_keeps_the_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    gen = torch.Generator().manual_seed(0)
    picks = {int(sample_top_p(probs.clone(), 0.7, gen)) for _ in range(200)}
    assert picks == {0, 1}


def test_meta_device_runs_the_loop_for_shapes(tokenizer):
    model = build_model(get_preset("11b-instruct"), device="meta")
    inp = prompt(tokenizer)
    steps = list(generate(model, inp, tokenizer.pad_id, tokenizer.stop_tokens, max_gen_len=3, device="meta"))
    n = len(inp.tokens)
    assert [s.positions for s in steps] == [(0, n), (n, n + 1), (n + 1, n + 2)]
    assert [tuple(s.logits.shape) for s in steps] == [(1, n, 128256), (1, 1, 128256), (1, 1, 128256)]
