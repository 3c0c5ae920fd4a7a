"""The tracer on small, non-Llama modules: hooks, kwargs, nesting, ops, FLOPs, values, cleanup."""

import gc
import math
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tracer import capture, trace, values


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 16)
        self.norm = nn.LayerNorm(16)

    def forward(self, x, *, scale: float = 1.0, mask=None):
        h = self.proj(x).view(2, 3, 16)  # [B, S, F]
        att = torch.softmax(h @ h.transpose(1, 2), dim=-1)  # [B, S, S]
        out = self.norm(att @ h) * scale
        return {"out": out, "parts": (h, att)}


class Boom(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x):
        self.inner(x)
        raise RuntimeError("boom")


def x_input():
    return torch.randn(6, 8, generator=torch.Generator().manual_seed(0))


def test_records_modules_with_kwargs_and_nested_outputs():
    m, x = Block(), x_input()
    with trace(m) as t:
        m(x, scale=2.0, mask=torch.ones(3))
    root = t.events[0]
    assert root["kind"] == "module" and root["name"] == "Block" and root["path"] == ""
    assert [i["path"] for i in root["inputs"]] == ["['x']", "['scale']", "['mask']"]
    assert root["inputs"][1]["value"] == 2.0
    assert [o["path"] for o in root["outputs"]] == ["['out']", "['parts'][0]", "['parts'][1]"]
    assert root["outputs"][2]["shape"] == [2, 3, 3]
    paths = [e["path"] for e in t.events]
    assert paths == ["", "proj", "norm"]
    assert t.events[1]["parent"] == 0 and t.events[1]["depth"] == 1
    assert t.events[1]["params"] == {"count": 8 * 16 + 16, "dtype": "float32", "total": 144}


def test_call_site_is_the_line_in_forward():
    m = Block()
    with trace(m) as t:
        m(x_input())
    src = t.events[1]["src"]
    assert src["code"] == "h = self.proj(x).view(2, 3, 16)  # [B, S, F]"
    assert src["func"].endswith("Block.forward")


def test_outputs_are_bitwise_equal_to_untraced():
    torch.manual_seed(0)
    m, x = Block(), x_input()
    plain = m(x, scale=0.5)
    with trace(m, ops=True) as t:
        traced = m(x, scale=0.5)
    assert torch.equal(plain["out"], traced["out"]) and torch.equal(plain["parts"][1], traced["parts"][1])
    assert len(t.events) > 3


def test_hooks_and_patches_are_removed():
    m = Block()
    original_linear = F.linear
    with trace(m, functions=["torch.nn.functional:softmax"]):
        m(x_input())
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.modules())
    assert all("forward" not in vars(mod) for mod in m.modules())  # the per-module wrappers are gone
    assert F.linear is original_linear and "matmul" not in vars(torch.Tensor)
    assert torch.nn.functional.softmax.__module__ == "torch.nn.functional"


def test_users_hooks_and_own_forwards_keep_working_and_stay():
    m = Block()
    seen = []
    handle = m.proj.register_forward_hook(lambda mod, args, out: seen.append(tuple(out.shape)))
    m.norm.forward = halve = lambda h: F.layer_norm(h, (16,)) / 2  # an instance's own forward
    plain = m(x_input())["out"]
    with trace(m) as t:
        traced = m(x_input())["out"]
    handle.remove()
    assert torch.equal(plain, traced) and seen == [(6, 16), (6, 16)]
    assert vars(m.norm)["forward"] is halve and "forward" not in vars(m.proj)
    norm = next(e for e in t.events if e["path"] == "norm")
    assert [i["path"] for i in norm["inputs"]] == ["['h']"] and norm["outputs"][0]["shape"] == [2, 3, 16]


def test_an_output_replaced_by_a_users_hook_is_what_the_event_shows():
    m = Block()
    handle = m.proj.register_forward_hook(lambda mod, args, out: out[:3])  # [6, 16] -> [3, 16]
    with pytest.raises(RuntimeError):  # the view to [2, 3, 16] no longer fits
        with trace(m) as t:
            m(x_input())
    handle.remove()
    proj = next(e for e in t.events if e["path"] == "proj")
    assert proj["outputs"][0]["shape"] == [3, 16] and "stats" in proj["outputs"][0]
    assert not m.proj._forward_hooks and all("forward" not in vars(mod) for mod in m.modules())


def test_a_forward_set_or_removed_during_a_trace_is_left_as_the_caller_made_it():
    m, original_linear = Block(), F.linear
    with trace(m):
        m.norm.forward = halve = lambda h: F.layer_norm(h, (16,)) / 2
        del m.proj.forward  # our wrapper, gone
        m(x_input())
    assert vars(m.norm)["forward"] is halve and "forward" not in vars(m.proj) and "forward" not in vars(m)
    assert F.linear is original_linear  # the rest of the clean-up ran


def test_a_copy_made_during_a_trace_runs_its_own_weights_and_pickling_says_why_not():
    import copy
    import pickle

    m = Block()
    with trace(m) as t:
        twin = copy.deepcopy(m)
        with pytest.raises(TypeError, match="is being traced"):
            pickle.dumps(m)
    with torch.no_grad():
        twin.proj.weight.zero_()
    out = twin(x_input())["parts"][0]  # [B, S, F]: proj's output, now its bias alone
    assert torch.equal(out, twin.proj.bias.expand_as(out)) and t.events == []
    pickle.dumps(m)  # after the trace, as before it


def test_nested_traces_exited_out_of_order_leave_nothing_behind():
    m = Block()
    outer, inner = trace(m), trace(m)
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)  # before the inner one
    m(x_input())
    n_outer = len(outer.events)
    inner.__exit__(None, None, None)
    assert n_outer == 0 and len(inner.events) == 3  # the ended trace records nothing more
    assert all("forward" not in vars(mod) for mod in m.modules())


def test_neither_a_module_nor_a_trace_outlives_its_use():
    import functools

    m = Block()
    m.proj.forward = functools.partial(nn.Linear.forward, m.proj)  # an instance's own forward, holding its module
    with trace(m) as outer:
        with trace(m):
            m(x_input())
    module, finished = weakref.ref(m), weakref.ref(outer)
    del m, outer
    gc.collect()
    assert module() is None and finished() is None


def test_exception_keeps_events_and_names_the_failing_line():
    m = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        with trace(m) as t:
            m(torch.ones(2, 4))
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.modules())
    assert all("forward" not in vars(mod) for mod in m.modules())
    assert [e["path"] for e in t.events] == ["", "inner"]
    assert t.events[0]["error"] == "RuntimeError" and "error" not in t.events[1]
    assert t.events[1]["outputs"][0]["shape"] == [2, 4]
    assert t.error["type"] == "RuntimeError" and t.error["src"]["code"] == 'raise RuntimeError("boom")'


def test_no_tensor_is_kept_alive():
    m = Block()
    x = x_input()
    refs = []
    with trace(m, ops=True) as t:
        out = m(x)
        refs = [weakref.ref(out["out"]), weakref.ref(out["parts"][0]), weakref.ref(out["parts"][1])]
    del out
    gc.collect()
    assert all(r() is None for r in refs)
    assert len(t.events) > 0


def test_ops_are_tied_to_their_module_and_noise_is_filtered():
    m = Block()
    with trace(m, ops=True) as t:
        m(x_input())
    ops = [(e["name"], e["path"]) for e in t.events if e["kind"] == "op"]
    names = [n for n, _ in ops]
    assert ("torch.nn.functional.linear", "proj") in ops
    assert ("Tensor.view", "") in ops and ("Tensor.transpose", "") in ops and ("torch.softmax", "") in ops
    assert names.count("Tensor.matmul") == 2  # `@` reaches torch as Tensor.matmul
    assert not any(n.endswith((".size", ".dim", "__get__")) for n in names)


def test_flops_of_linear_and_matmul():
    m = Block()
    with trace(m) as t:
        m(x_input())
    assert t.events[1]["flops"] == 2 * 6 * 8 * 16  # proj: 2 * tokens * in * out
    assert t.events[0]["flops"] == 2 * (2 * 3 * 3 * 16) * 2  # two batched matmuls in Block.forward


def test_value_summaries_match_torch():
    m = Block()
    with trace(m) as t:
        out = m(x_input())
    stats = t.events[0]["outputs"][0]["stats"]
    ref = out["out"]
    assert stats["min"] == pytest.approx(ref.min().item(), rel=1e-5)
    assert stats["max"] == pytest.approx(ref.max().item(), rel=1e-5)
    assert stats["mean"] == pytest.approx(ref.mean().item(), abs=1e-6)
    assert stats["std"] == pytest.approx(ref.std(correction=0).item(), rel=1e-4)
    assert stats["nan"] == 0 and stats["inf"] == 0


def test_nan_and_inf_are_counted():
    lin = nn.Identity()
    with trace(lin) as t:
        lin(torch.tensor([1.0, float("nan"), float("inf"), float("-inf")]))
    stats = t.events[0]["outputs"][0]["stats"]
    assert stats["nan"] == 1 and stats["inf"] == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", [5, values.SMALL + 5])  # batched copies; a large CPU tensor summarised at once
def test_value_summaries_small_and_large_with_and_without_nonfinite(n, dtype):
    x = torch.randn(n, generator=torch.Generator().manual_seed(0)).to(dtype)
    lin = nn.Identity()
    with trace(lin) as t:
        lin(x)
    stats = t.events[0]["outputs"][0]["stats"]
    ref = x.float()
    assert stats["min"] == pytest.approx(ref.min().item(), rel=1e-5)  # logs keep 6 significant digits
    assert stats["max"] == pytest.approx(ref.max().item(), rel=1e-5)
    assert stats["mean"] == pytest.approx(ref.mean().item(), abs=1e-5)
    assert stats["std"] == pytest.approx(ref.std(correction=0).item(), rel=1e-4)
    assert stats["nan"] == 0 and stats["inf"] == 0
    x[1], x[2], x[3] = float("nan"), float("inf"), float("-inf")
    with trace(lin) as t:
        lin(x)
    stats = t.events[0]["outputs"][0]["stats"]
    assert (stats["nan"], stats["inf"], stats["min"], stats["max"]) == (1, 2, "nan", "nan")


@pytest.mark.parametrize("n", [512 * 260, values.SMALL + 5])  # batched; summarised at once
def test_a_mask_of_the_lowest_bf16_value_has_a_finite_mean_and_std(n):
    # An additive mask: bf16's lowest finite value almost everywhere. Its fp32 sum overflows.
    mask = torch.full((n,), torch.finfo(torch.bfloat16).min, dtype=torch.bfloat16)
    mask[: n // 100] = 0
    ident = nn.Identity()
    with trace(ident) as t:
        ident(mask)
    stats = t.events[0]["outputs"][0]["stats"]
    ref = mask.double()
    assert stats["mean"] == pytest.approx(ref.mean().item(), rel=1e-5)
    assert stats["std"] == pytest.approx(ref.std(correction=0).item(), rel=1e-4)
    assert (stats["nan"], stats["inf"]) == (0, 0)
    for row in (values._raw_moments(mask.float()[None]).tolist()[0], values._cpu_moments(mask.float()[None])[0]):  # accelerator's, CPU's
        lo, hi, total, m2, nan, inf = row
        assert total == pytest.approx(ref.sum().item(), rel=1e-6) and math.isfinite(m2)


def test_a_nan_in_one_row_does_not_hide_another_rows_overflow():
    mask = torch.full((1000,), torch.finfo(torch.bfloat16).min)
    mask[:10] = 0
    noisy = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    noisy[0] = float("nan")
    rows = torch.stack([noisy, mask])  # one batch: a NaN row and a mask row
    lo, hi, total, m2, nan, inf = values._cpu_moments(rows.clone())[1]
    assert total == pytest.approx(mask.double().sum().item(), rel=1e-6) and math.isfinite(m2) and nan == 0


@pytest.mark.parametrize("n", [7, values.SMALL + 3])
def test_the_cpu_moments_agree_with_the_accelerator_moments(n):
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(5, n, generator=g) * torch.tensor([[1.0], [1e-3], [1e4], [1.0], [1.0]]) + 3.0  # [5, n]
    rows[3, 1], rows[4, 2], rows[4, 3] = float("nan"), float("inf"), float("-inf")
    for keep in (False, True):  # into new memory, then in place
        work = rows.clone()
        cpu = values._cpu_moments(work, out=work if keep else None)
        accelerator = values._raw_moments(rows.clone()).tolist()
        for got, want, row in zip(cpu, accelerator, rows.double()):
            assert got[:2] + got[4:] == pytest.approx(want[:2] + want[4:], nan_ok=True)
            scale = row.nan_to_num(0.0, 0.0, 0.0).abs().sum().item()  # what an fp32 sum can promise: eps * sum |x|
            assert got[2] == pytest.approx(want[2], abs=1e-6 * scale, nan_ok=True)  # fp32 sums here, float64 there
            assert got[3] == pytest.approx(want[3], rel=1e-5, nan_ok=True)


@pytest.mark.parametrize("n", [5, values.SMALL + 5])  # batched; summarised at once
def test_float64_and_large_integers_keep_their_range_and_their_digits(n):
    big = torch.full((n,), 1e300, dtype=torch.float64)
    big[0] = -1e300
    ids = torch.full((n - n % 2,), 2**40, dtype=torch.int64)
    ids[1::2] = 2**40 + 2  # in fp32 both would be 2**40: a constant
    ident = nn.Identity()
    with trace(ident) as t:
        ident(big)
        ident(ids)
    big_stats, id_stats = (e["outputs"][0]["stats"] for e in t.events)
    assert (big_stats["min"], big_stats["max"], big_stats["inf"]) == (-1e300, 1e300, 0)
    assert big_stats["mean"] == pytest.approx(big.mean().item(), rel=1e-5)
    assert id_stats["std"] == 1.0


@pytest.mark.parametrize("offset", [100.0, 1e4])
@pytest.mark.parametrize("n", [5000, values.SMALL + 5])  # batched; summarised at once
def test_the_std_of_values_far_from_zero_is_exact(n, offset):
    x = offset + torch.randn(n, generator=torch.Generator().manual_seed(0))  # |mean| / std: 100, 10000
    ident = nn.Identity()
    with trace(ident) as t:
        ident(x)
    stats = t.events[0]["outputs"][0]["stats"]
    assert stats["std"] == pytest.approx(x.double().std(correction=0).item(), rel=1e-5)
    assert stats["mean"] == pytest.approx(x.double().mean().item(), rel=1e-6)


@pytest.mark.parametrize("n", [3, values.SMALL + 5])  # batched; summarised at once
def test_a_std_near_the_spacing_of_the_mean_is_exact_and_a_mean_under_cancellation_close(n):
    near = torch.full((n,), 10000.0)
    near[1::2] = 10000.0009765625  # the next float32 but one: the fp32 total of the row loses it
    signs = torch.full((n,), 60000.0)
    signs[1::2] = -60000.0
    signs[0] = 1.5  # a small mean from large values of both signs
    ident = nn.Identity()
    with trace(ident) as t:
        ident(near)
        ident(signs)
    for event, x in zip(t.events, (near, signs)):
        stats, ref = event["outputs"][0]["stats"], x.double()
        assert stats["std"] == pytest.approx(ref.std(correction=0).item(), rel=1e-5)
        rms = ref.square().mean().sqrt().item()  # fp32 sums promise the mean to about 1e-7 of it, not to its own digits
        assert stats["mean"] == pytest.approx(ref.mean().item(), abs=1e-6 * rms)


@pytest.mark.parametrize("n", [5, values.SMALL + 5])  # batched; summarised at once
def test_values_of_both_signs_near_the_largest_float_have_a_finite_std(n):
    x = torch.full((n,), -3e38)
    x[0] = 3e38  # x - mean passes float32's largest value
    ident = nn.Identity()
    with trace(ident) as t:
        ident(x)
    stats = t.events[0]["outputs"][0]["stats"]
    assert stats["std"] == pytest.approx(x.double().std(correction=0).item(), rel=1e-5)
    for row in (values._raw_moments(x[None].clone()).tolist()[0], values._cpu_moments(x[None].clone())[0]):  # accelerator's, CPU's
        assert row[3] == pytest.approx(x.double().var(correction=0).item() * n, rel=1e-5)


def test_tensors_made_in_inference_mode_are_summarised():
    lin = nn.Linear(4, 4)
    with torch.inference_mode(), trace(lin) as t:
        x = torch.randn(3, 4)
        y = lin(x)
        lin(x)  # the same input again: inference tensors have no version counter to tell a repeat by
    assert t.events[0]["outputs"][0]["stats"]["max"] == pytest.approx(y.max().item(), rel=1e-5)
    assert t.events[1]["outputs"][0]["stats"] == t.events[0]["outputs"][0]["stats"]


@pytest.mark.parametrize("strided", [False, True])
def test_a_large_tensor_summarised_in_chunks_matches_float64_and_sees_a_nan_in_its_last_chunk(strided):
    g = torch.Generator().manual_seed(0)
    n = 2 * values.CHUNK + 7  # three chunks, the last one short
    x = torch.randn(n, generator=g) * torch.repeat_interleave(torch.tensor([1.0, 30.0, 1e-3]), torch.tensor([values.CHUNK, values.CHUNK, 7]))
    x[values.CHUNK:] += 500.0  # chunks far apart: the mean is none of theirs
    x = x.bfloat16()
    if strided:
        x = torch.stack([x, x], dim=1)[:, 0]  # every other element of a [n, 2] tensor
    ident = nn.Identity()
    with trace(ident) as t:
        ident(x)
    stats, ref = t.events[0]["outputs"][0]["stats"], x.double()
    assert (stats["min"], stats["max"]) == (ref.min().item(), ref.max().item())
    assert stats["mean"] == pytest.approx(ref.mean().item(), rel=1e-5)  # logs keep 6 significant digits
    assert stats["std"] == pytest.approx(ref.std(correction=0).item(), rel=1e-5)
    (lo, hi, total, m2, nan, inf), = values._chunked_moments(x.reshape(n), torch.float32, torch.empty(values.CHUNK))
    assert total == pytest.approx(ref.sum().item(), rel=1e-7) and m2 == pytest.approx(ref.var(correction=0).item() * n, rel=1e-6)
    x[-1] = float("nan")
    with trace(ident) as t:
        ident(x)
    stats = t.events[0]["outputs"][0]["stats"]
    assert (stats["nan"], stats["min"], stats["max"]) == (1, "nan", "nan")


def test_raw_moments_count_nonfinite_in_one_go_as_on_an_accelerator():
    x = torch.zeros(values.SMALL + 5)
    x[0], x[1], x[2] = float("nan"), float("inf"), 3.0
    lo, hi, total, squares, nan, inf = values._raw_moments(x[None]).tolist()[0]
    assert (nan, inf) == (1, 1)
    x[0], x[1] = 0.0, 0.0
    lo, hi, total, m2, nan, inf = values._raw_moments(x[None]).tolist()[0]
    assert [lo, hi, total, nan, inf] == [0.0, 3.0, 3.0, 0.0, 0.0]
    assert m2 == pytest.approx(9.0 - 9.0 / x.numel(), rel=1e-9)  # the squared deviations from the mean


def test_meta_tensors_get_shapes_but_no_statistics():
    lin = nn.Linear(4, 3, device="meta")
    with trace(lin) as t:
        lin(torch.empty(2, 4, device="meta"))
    out = t.events[0]["outputs"][0]
    assert out == {"path": "", "shape": [2, 3], "dtype": "float32", "device": "meta"}


def test_wrapped_functions_become_events_with_named_inputs():
    def double(x, factor=2):
        return x * factor

    import types

    mod = types.ModuleType("toy_functions")
    mod.double = double
    import sys

    sys.modules["toy_functions"] = mod
    try:
        with trace(None, functions=["toy_functions:double"], stage_rules=[("^double$", "math.double")]) as t:
            mod.double(torch.ones(3), factor=3)
        assert mod.double is double
    finally:
        del sys.modules["toy_functions"]
    (event,) = t.events
    assert event["kind"] == "function" and event["stage"] == "math.double"
    assert [i["path"] for i in event["inputs"]] == ["['x']", "['factor']"]


def test_a_wrapped_function_that_raises_is_closed_even_when_its_caller_carries_on():
    import sys
    import types

    def picky(x):
        raise ValueError("no")

    toy = types.ModuleType("toy_picky")
    toy.picky = picky

    class Careful(nn.Module):
        def __init__(self):
            super().__init__()
            self.after = nn.Identity()

        def forward(self, x):
            try:
                toy.picky(x)
            except ValueError:
                pass
            return self.after(x)

    sys.modules["toy_picky"] = toy
    try:
        m = Careful()
        with trace(m, functions=["toy_picky:picky"]) as t:
            m(torch.ones(2))
    finally:
        del sys.modules["toy_picky"]
    root, failed, after = t.events
    assert failed["name"] == "picky" and failed["error"] == "ValueError" and failed["outputs"] == []
    assert after["path"] == "after" and after["parent"] == root["seq"] and after["depth"] == 1
    assert t.error is None and "error" not in root


def test_a_trace_records_one_run():
    m = nn.Identity()
    t = trace(m)
    with t:
        with pytest.raises(RuntimeError, match="one run"):
            t.__enter__()
        m(torch.ones(2))
    with pytest.raises(RuntimeError, match="one run"):
        with t:
            pass
    assert len(t.events) == 1 and "forward" not in vars(m)


class Scaler(nn.Module):
    factor = 2.0

    @classmethod
    def scale(cls, x):
        return x * cls.factor

    def forward(self, inp):
        return self.scale(inp)


class Doubler(Scaler):  # forward and scale inherited
    pass


def test_wrapped_classmethods_inherited_methods_and_module_forwards():
    import sys
    import types

    toy = types.ModuleType("toy_classes")
    toy.Scaler, toy.Doubler = Scaler, Doubler
    sys.modules["toy_classes"] = toy
    try:
        m = Doubler()
        with trace(m, functions=["toy_classes:Doubler.scale", "toy_classes:Doubler.forward"]) as t:
            out = m(torch.ones(2))
        assert torch.equal(out, torch.full((2,), 2.0)) and Doubler.scale(torch.ones(1)).item() == 2.0
        assert "scale" not in vars(Doubler) and "forward" not in vars(Doubler) and "forward" not in vars(m)
    finally:
        del sys.modules["toy_classes"]
    module, forward, scale = t.events
    assert (module["kind"], forward["name"], scale["name"]) == ("module", "Doubler.forward", "Doubler.scale")
    assert [i["path"] for i in module["inputs"]] == ["['inp']"] and [i["path"] for i in scale["inputs"]] == ["['x']"]


def test_a_copy_of_a_hooked_module_and_a_direct_forward_call_during_a_trace():
    import copy

    m = Block()
    m.proj.register_forward_hook(lambda mod, args, out: out * 1)  # a new tensor: the event shows it
    with trace(m) as t:
        twin = copy.deepcopy(m)
        m.proj.forward(x_input())  # no hooks run after a direct call
        with pytest.raises(RuntimeError):
            m.proj(x_input()[:, :3])  # fails in the forward: its event closes with the error
    assert twin(x_input())["out"].shape == (2, 3, 16)  # the copy's hooks run, ours do nothing there
    direct, failed = t.events
    assert "error" not in direct and direct["outputs"][0]["shape"] == [6, 16]
    assert failed["error"] == "RuntimeError" and failed["outputs"] == []


def test_phases_and_stage_inheritance():
    m = Block()
    with trace(m, stage_rules=[("^proj$", "projection")]) as t:
        with t.phase("prefill", step=0):
            m(x_input())
    phase, root, proj, norm = t.events
    assert phase["kind"] == "phase" and phase["info"] == {"step": 0}
    assert all(e["phase"] == "prefill" for e in t.events)
    assert proj["stage"] == "projection" and norm["stage"] is None


def test_nested_phases_give_the_outer_one_back():
    m = Block()
    with trace(m) as t:
        with t.phase("generate"):
            with t.phase("prefill"):
                m(x_input())
            m(x_input())
        m(x_input())
    modules = [e for e in t.events if e["kind"] == "module" and e["path"] == ""]
    assert [e["phase"] for e in modules] == ["prefill", "generate", None]


def test_a_symbol_table_set_again_is_the_same_object():
    t = trace(Block(), symbols={"D": 16})
    first = t.symbols
    t.set_symbols({"D": 16, "S": 1})
    t.set_symbols({"D": 16})
    assert t.symbols is first


def test_phase_and_step_events_are_complete_while_the_trace_runs():
    m = Block()
    with trace(m) as t:
        with t.phase("prefill") as phase:
            assert phase["src"]["line"] > 0 and phase["src"]["code"].startswith("with t.phase")
            m(x_input())
        step = t.record("pick", torch.zeros(2, dtype=torch.int64))
        assert step["src"]["code"].startswith("step = t.record") and step["outputs"][0]["shape"] == [2]


def test_timing_fields_can_be_left_out():
    m = Block()
    with trace(m, timing=False) as t:
        m(x_input())
    assert all("time_ms" not in e for e in t.events)


def test_batched_summaries_keep_each_tensor_apart():
    """Same-size outputs share one batch of reductions, read back once."""
    xs = [torch.randn(7, 9, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    xs[2][1, 1] = float("nan")
    lin = nn.Identity()
    with trace(lin) as t:
        for x in xs:
            lin(x)
    for event, x in zip(t.events, xs):
        stats = event["outputs"][0]["stats"]
        if x.isnan().any():
            assert (stats["nan"], stats["min"]) == (1, "nan")
            continue
        assert (stats["min"], stats["max"]) == (pytest.approx(x.min().item(), rel=1e-5), pytest.approx(x.max().item(), rel=1e-5))
        assert stats["mean"] == pytest.approx(x.mean().item(), abs=1e-6) and stats["nan"] == 0


def test_full_batches_are_summarised_and_their_rows_reused_across_traces():
    """More same-shape outputs than a batch holds (its rows are then reused, also by the next
    trace, through the pool); non-contiguous and integer inputs copy into the rows too."""
    lin = nn.Identity()
    for offset in (0.0, 1000.0):  # the second trace writes over rows the first one left pooled
        xs = [torch.full((3, 5), offset + i).t() for i in range(600)]  # [5, 3], not contiguous
        xs[-1] = torch.arange(15, dtype=torch.int64).reshape(5, 3)
        with trace(lin) as t:
            for x in xs:
                lin(x)
        got = [e["outputs"][0]["stats"] for e in t.events]
        assert [s["mean"] for s in got[:-1]] == [offset + i for i in range(599)]
        assert all(s["std"] == 0 and s["nan"] == 0 for s in got[:-1])
        assert (got[-1]["min"], got[-1]["max"], got[-1]["mean"]) == (0, 14, 7)


@pytest.mark.parametrize("args, kwargs, names", [
    ((torch.zeros(2, 3),), {}, ["x"]),  # the usual module call
    ((torch.zeros(2), torch.ones(4, dtype=torch.int64)), {"mask": torch.zeros(1, 1)}, ["x", "ids"]),
    ((torch.zeros(2), torch.zeros(3)), {}, ["x"]),  # more positionals than names: arg1
    ((torch.zeros(2), 5, None), {"scale": 0.5}, ["x", "n", "extra"]),  # non-tensors: the general walk
    ((torch.zeros(2),), {"parts": (torch.zeros(1), [1, 2, 3])}, ["x"]),  # nested kwargs
    ((), {}, []),
])
def test_call_description_fast_path_matches_the_general_one(args, kwargs, names):
    fast_items, fast_tensors = values.describe_call(args, kwargs, names)
    items, tensors = values.describe_with_tensors(values.named_args(args, kwargs, names))
    assert fast_items == items
    assert len(fast_tensors) == len(tensors) and all(a is b for (_, a), (_, b) in zip(fast_tensors, tensors))


@pytest.mark.parametrize("args, kwargs, names", [
    ((torch.zeros(2, 3),), {}, ["x"]),
    ((torch.zeros(2), torch.ones(4, dtype=torch.int64)), {"mask": torch.zeros(1, 1)}, ["x", "ids"]),
    ((torch.zeros(2), torch.zeros(3)), {}, ["x"]),  # more positionals than names: arg1
    ((torch.zeros(2), 5, None, True, "s" * 300), {"scale": 0.5}, ["x", "n", "extra"]),  # scalars; a long string cut
    ((torch.zeros(2), 3), {"args": 5}, ["args", "kwargs"]),  # a keyword named like a positional takes its place
    ((torch.zeros(2), torch.zeros(3)), {"x": torch.zeros(1)}, ["x"]),  # all tensors: kept apart, as describe_call does
    ((torch.zeros(4)[1:].view(3, 1),), {"arg1": 2}, ["x"]),  # a view; a keyword named like a made-up name
    ((), {}, []),
])
def test_the_hot_path_record_describes_a_call_as_describe_call_does(args, kwargs, names):
    record = values.call_record(args, kwargs, names)
    assert type(record) is tuple  # recorded raw (only plain leaves here)
    assert values.describe_record(record) == values.describe_call(args, kwargs, names)[0]
    assert type(values.call_record((torch.zeros(1), [1, 2]), {}, ["x", "ids"])) is list  # a list argument: described at once


class Scaled(nn.Module):
    def forward(self, x, scale):
        return x * scale


def test_repeated_calls_share_no_descriptions_and_keep_scalars_apart():
    """Calls that repeat (every decode step) are described once and copied: each event's items
    are its own, and scalars that compare equal but print apart (0.0 and -0.0, 1 and True)
    stay apart."""
    m = Scaled()
    scales = [1, 1, True, 1.0, 0.0, -0.0, 2, 2]
    with trace(m, symbols={"D": 32}) as t:
        for s in scales:
            m(torch.ones(1, 32), s)
    shown = [e["inputs"][1]["value"] for e in t.events]
    assert [(type(v), repr(v)) for v in shown] == [(type(s), repr(s)) for s in scales]
    first, second = t.events[0], t.events[1]
    assert first["inputs"] == second["inputs"] and first["outputs"] == second["outputs"]
    assert first["inputs"][0]["sym"] == [None, "D"]
    assert all(a is not b for a, b in zip(first["inputs"] + first["outputs"], second["inputs"] + second["outputs"]))


def test_hooks_registered_during_the_trace_are_followed():
    """A forward hook added mid-trace (on the module, or for every module) that replaces an
    output: the event shows what the module hands on, and nothing of ours stays behind."""
    m = Block()
    with trace(m) as t:
        m(x_input())
        handle = m.proj.register_forward_hook(lambda mod, args, out: out * 0)
        m(x_input())
        handle.remove()
        handle = torch.nn.modules.module.register_module_forward_hook(lambda mod, args, out: out + 1 if mod is m.proj else None)
        try:
            m(x_input())
        finally:
            handle.remove()
    proj = [e["outputs"][0]["stats"] for e in t.events if e["path"] == "proj"]
    assert proj[0]["std"] > 0 and proj[1] == {"min": 0, "max": 0, "mean": 0, "std": 0, "nan": 0, "inf": 0}
    assert proj[2]["mean"] == pytest.approx(proj[0]["mean"] + 1, abs=1e-5)
    assert not m.proj._forward_hooks and not m.proj._forward_hooks_always_called
    assert all("forward" not in vars(mod) for mod in m.modules())


def test_a_shallow_copy_made_during_a_trace_runs_itself_not_the_original():
    import copy

    m = Scaled()
    m.forward = own = lambda x, scale: x * scale * 10  # an instance's own forward, copied as it was
    plain = Block()
    with trace(plain), trace(m):
        twin, other = copy.copy(plain.norm), copy.copy(m)
    twin.eps = 1e3  # the copy's own setting, the original's unchanged
    h = torch.randn(2, 16)
    assert torch.equal(twin(h), F.layer_norm(h, (16,), twin.weight, twin.bias, 1e3)) and "forward" not in vars(twin)
    assert vars(other)["forward"] is own and other(torch.ones(1), 2).item() == 20
    assert "__setstate__" not in vars(Scaled) and "forward" not in vars(plain.norm)
    assert vars(nn.Module)["__setstate__"] is capture._MODULE_SETSTATE  # put back
