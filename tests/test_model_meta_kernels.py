"""`model.meta_kernels`: meta-device shapes from torch's C++ kernels equal torch's Python ones."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from model.meta_kernels import use_native_meta_kernels

ROOT = Path(__file__).resolve().parents[1]

# A child process (the switch is process-wide and one-way): a whole 11B meta trace with --ops, so
# every torch function's output shape is in the log, written with or without the switch.
CHILD = """
import sys
import model.meta_kernels
import walkthroughs.run
if sys.argv[1] == "python-kernels":
    walkthroughs.run.use_native_meta_kernels = lambda: False
from walkthroughs.cli import app
sys.argv = ["llama-trace", "run", "--model", "11b-instruct", "--ops", "--format", "json", "-o", sys.argv[2], "--no-timing"]
try:
    app()
finally:
    print("heavy imports:", sorted(m for m in ("sympy", "torch._dynamo") if m in sys.modules), file=sys.stderr)
"""


def _trace_in_child(kind: str, out: Path) -> str:
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stderr


def test_meta_trace_is_byte_identical_with_torch_python_kernels(tmp_path):
    native, python = tmp_path / "native.jsonl", tmp_path / "python.jsonl"
    native_err = _trace_in_child("native", native)
    python_err = _trace_in_child("python-kernels", python)
    assert native.read_bytes() == python.read_bytes()
    assert "heavy imports: []" in native_err  # the point of the switch: no sympy, no torch._dynamo
    assert "heavy imports: ['sympy', 'torch._dynamo']" in python_err


@pytest.fixture(scope="module", autouse=True)
def native_kernels():
    assert use_native_meta_kernels()
    assert use_native_meta_kernels()  # idempotent


def _both(fn, *tensors, **kwargs):
    """fn on CPU tensors and on meta copies of them: (cpu result, meta result)."""
    return fn(*tensors, **kwargs), fn(*(t.to("meta") for t in tensors), **kwargs)


def _same_meta(cpu: torch.Tensor, meta: torch.Tensor) -> None:
    assert meta.device.type == "meta"
    assert (meta.shape, meta.dtype) == (cpu.shape, cpu.dtype)


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4)
dtypes = st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool])


@settings(max_examples=40, deadline=None)
@given(shape=shapes, data=st.data(), a=dtypes, b=dtypes)
def test_where_broadcasts_and_promotes_like_cpu(shape, data, a, b):
    def variant():  # broadcastable to `shape`: some dims set to 1, some leading dims dropped
        ones = data.draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)))
        lead = data.draw(st.integers(0, len(shape) - 1))
        return [1 if one else d for d, one in zip(shape, ones)][lead:]

    cond = torch.rand(variant()) > 0.5
    x, y = torch.ones(variant(), dtype=a), torch.zeros(variant(), dtype=b)
    _same_meta(*_both(torch.where, cond, x, y))


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), n_norm=st.integers(1, 2), dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_layer_norm_like_cpu(shape, n_norm, dtype):
    normalized = shape[-min(n_norm, len(shape)):]
    x, w, b = torch.randn(shape, dtype=dtype), torch.randn(normalized, dtype=dtype), torch.randn(normalized, dtype=dtype)
    _same_meta(*_both(lambda x, w, b: F.layer_norm(x, normalized, w, b), x, w, b))


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), data=st.data())
def test_index_select_and_embedding_like_cpu(shape, data):
    dim = data.draw(st.integers(0, len(shape) - 1))
    index = torch.tensor(data.draw(st.lists(st.integers(0, shape[dim] - 1), min_size=0, max_size=6)), dtype=torch.long)
    _same_meta(*_both(lambda x, i: torch.index_select(x, dim, i), torch.randn(shape), index))
    table = torch.randn(7, 3, dtype=torch.bfloat16)
    ids = torch.tensor([[0, 6, 2]])
    _same_meta(*_both(F.embedding, ids, table))


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_attention_softmax_like_cpu(mask_dtype):
    q, k, v = torch.randn(1, 4, 3, 8), torch.randn(1, 4, 5, 8), torch.randn(1, 4, 5, 8)
    mask = torch.ones(1, 1, 3, 5, dtype=mask_dtype)
    _same_meta(*_both(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m), q, k, v, mask))
    _same_meta(*_both(lambda x: torch.softmax(x, dim=-1, dtype=torch.float32), torch.randn(2, 3, dtype=torch.bfloat16)))
