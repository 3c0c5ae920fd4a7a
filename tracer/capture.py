"""The recorder: module hooks, wrapped functions, optional torch-function ops, FLOPs, stages.

    with trace(model, ops=False) as t:
        model(x)
    t.events     # list of dicts, in execution order (by `seq`), complete once the trace has exited
    t.save(path)

Hot path first: while the model runs, a module's event keeps only what is cheap to take (the
source line's code object and number, the shapes, dtypes and devices of its inputs and of a lone
output tensor); everything is described after the run, when no kernel waits on the host.

Generic: it knows nothing about the model it traces. The caller may name functions to wrap
(`functions={"pkg.mod:func": ...}`), rules that map module paths or function names to stage
ids, and a table of shape symbols.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import linecache
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import perf_counter

from torch import Tensor, nn
from torch.nn.modules import module as module_internals
from torch.overrides import TorchFunctionMode, resolve_name

from . import flops, source, values
from .symbols import SymbolTable

# Torch functions that only read metadata; recording them would drown the real ops.
NOISE = {
    "size", "dim", "numel", "__len__", "__format__", "__repr__", "__bool__", "__index__", "__int__",
    "__float__", "__hash__", "__iter__", "__contains__", "is_floating_point", "is_complex", "element_size",
    "data_ptr", "stride", "storage_offset", "is_contiguous", "get_device", "requires_grad_", "__get__",
    "__set__", "_get_tracing_state", "has_torch_function", "tolist", "item", "__array__", "_is_view",
    "is_nonzero", "__reduce_ex__", "__deepcopy__", "_has_compatible_shallow_copy_type", "__setstate__",
    "type", "dtype", "shape", "device", "ndim", "is_cuda", "is_meta", "names",
}


_GLOBAL_FORWARD_HOOKS = module_internals._global_forward_hooks  # `register_module_forward_hook`'s, run before a module's own
_CALL_IMPL = nn.Module._call_impl.__code__  # the frame that calls a module's forward (without hooks)
_MODULE_FILE = _CALL_IMPL.co_filename  # with hooks, a function nested in it calls it
_INHERITED = object()  # marks a patched attribute that the class (or module instance) only inherited
_STAGE_CACHES: dict[tuple, dict[str, str | None]] = {}  # rules -> {path or function name: stage}
_LOCATIONS: dict[tuple, dict[int, tuple]] = {}  # source roots -> {id(code): (code, {line: src})}
_ARG_NAMES: dict[tuple, list[str]] = {}  # (function, bound) -> its parameter names


def _unwrapped(attr):
    """The function inside a staticmethod or classmethod; anything else as it is."""
    return attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr


def _ended(attr) -> bool:
    """Whether attr is something a trace put in place (see `Trace._patch`) and that trace has ended."""
    owner = getattr(_unwrapped(attr), "_trace_owner", None)
    return owner is not None and owner._done


@dataclass
class StageRule:
    """Events whose module path or function name matches `pattern` belong to stage `stage`."""

    pattern: str
    stage: str
    regex: re.Pattern = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.regex = re.compile(self.pattern)


class _FunctionMode(TorchFunctionMode):
    """Sees every torch function call: adds its FLOPs to the innermost open event and, with
    `ops=True`, records it as an op event tied to the module it ran in."""

    def __init__(self, tracer: "Trace") -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tracer = self.tracer
        if tracer._busy or not tracer._stack:
            return out
        tracer._busy = True
        try:
            if tracer.count_flops:
                n = flops.count(func, args, kwargs, out)
                if n:
                    target = tracer._stack[-1]
                    target["flops"] = target.get("flops", 0) + n
            if tracer.ops and getattr(func, "__name__", "") not in NOISE:
                tracer._record_op(func, args, kwargs, out)
        finally:
            tracer._busy = False
        return out


class _Forward:
    """A module's hooks while a trace runs: set as the instance's `forward` by
    `Trace._wrap_forward`, it opens the module's event, calls the forward it replaced (`inner`)
    and closes the event, also when the forward raises. A copy of the module made meanwhile
    (`copy.deepcopy`, or `copy.copy`: `_setstate_untraced`) gets the module's own forward
    instead, which runs the copy; pickling the module while it is traced says so."""

    __slots__ = ("module", "__wrapped__", "_trace_owner", "_trace_previous", "after", "last", "info")

    def __init__(self, tracer: "Trace", module: nn.Module, inner, previous, info: tuple) -> None:
        self._trace_owner, self.module, self.__wrapped__, self._trace_previous = tracer, module, inner, previous
        self.info = info  # `Trace._module_info`
        self.after = None  # the handle of our `_AfterHooks`, once the module has forward hooks
        self.last: tuple | None = None

    def __call__(self, *args, **kwargs):
        """The hottest path of all, so it does only what is cheap now: it keeps the source line's
        code object and number, the inputs' shapes (`values.call_record`) and a lone output
        tensor's metadata, and `Trace._materialize` describes them after the run."""
        tracer, inner = self._trace_owner, self.__wrapped__
        if tracer._busy:
            return inner(*args, **kwargs)
        tracer._busy = True
        try:
            frame = sys._getframe(1)  # our caller: nn.Module._call_impl, as a rule
            if frame.f_code is _CALL_IMPL:
                frame = frame.f_back.f_back  # past Module._wrapped_call_impl
            frame = source.caller_frame(0, frame)
            path, cls, stage, params, names = self.info
            stack = tracer._stack
            event = tracer._head("module", path, cls, stage)
            event["params"] = params
            event["src"] = (frame.f_code, frame.f_lineno) if frame is not None else None
            event["inputs"] = values.call_record(args, kwargs, names)
            event["_symbols"] = tracer.symbols
            tracer.events.append(event)
            stack.append(event)
        finally:
            tracer._busy = False
        t0 = perf_counter()
        try:
            output = inner(*args, **kwargs)
        except BaseException as exc:
            tracer._module_failed(event, t0, exc)
            raise
        t1 = perf_counter()
        tracer._busy = True
        try:
            if stack and stack[-1] is event:
                stack.pop()
            if not isinstance(output, Tensor):
                tracer._close(event, output)
            elif output.is_meta or not tracer.values_summary:
                event["outputs"] = (output.shape, output.dtype, output.device)  # described in `_materialize`
            else:
                item = values.tensor_item("", output)
                tracer._stats.add(item, output)
                event["outputs"] = [item]
            if tracer.timing:
                event["time_ms"] = (t1 - t0) * 1000  # rounded in _finish
        finally:
            tracer._busy = False
        hooks = self.module._forward_hooks
        if (hooks or _GLOBAL_FORWARD_HOOKS) and sys._getframe(1).f_code.co_filename == _MODULE_FILE:
            if self.after is None or not hooks or next(reversed(hooks)) != self.after.id:  # ours is not last (a hook added mid-trace)
                tracer._hook_after(self)
            self.last = (event, output)  # for `_AfterHooks`, which runs next (not after a direct `.forward()`)
        return output

    def __deepcopy__(self, memo: dict):
        if self._trace_previous is not _INHERITED:  # the instance's own forward, copied
            return copy.deepcopy(self._trace_previous, memo)
        twin = memo.get(id(self.module))
        return self if twin is None else type(twin).forward.__get__(twin)  # the class's forward, bound to the copy

    def __reduce__(self):
        raise TypeError(f"{type(self.module).__name__} is being traced: pickle it before or after the trace")


class _AfterHooks:
    """A forward hook of ours, after the user's own on a module: its event shows what the module
    hands on, where a hook of theirs replaced the output. A copy of the module made during the
    trace gets a hook that does nothing."""

    __slots__ = ("forward",)

    def __init__(self, forward: _Forward) -> None:
        self.forward = forward

    def __call__(self, module: nn.Module, args: tuple, output) -> None:
        forward = self.forward
        last, forward.last = forward.last, None  # (None when the forward raised: its event is closed)
        tracer = forward._trace_owner
        if last is None or tracer._done:
            return
        event, returned = last
        if output is not returned:
            tracer._busy = True
            try:
                event["outputs"] = tracer._describe(output, stats=tracer.values_summary)
            finally:
                tracer._busy = False

    def __deepcopy__(self, memo: dict):
        return _ignore

    def __reduce__(self):
        return self.forward.__reduce__()


def _ignore(*args) -> None:
    return None


_MODULE_SETSTATE = nn.Module.__setstate__


def _setstate_untraced(module: nn.Module, state: dict) -> None:
    """`nn.Module.__setstate__` while a trace runs. A shallow copy of a traced module
    (`copy.copy`) would get our wrapper in its own `forward`, running the original module for
    good: it gets what the original had before the trace (the class's forward, bound to the
    copy, or the original's own callable) instead."""
    _MODULE_SETSTATE(module, state)
    attrs = module.__dict__
    forward = attrs.get("forward")
    while isinstance(forward, _Forward) and forward.module is not module:
        forward = forward._trace_previous
        if forward is _INHERITED:
            del attrs["forward"]
            return
        attrs["forward"] = forward


class Trace:
    def __init__(
        self,
        module: nn.Module | None = None,
        *,
        ops: bool = False,
        values_summary: bool = True,
        functions: dict[str, str] | list[str] | None = None,
        stage_rules: list[tuple[str, str]] | None = None,
        symbols: dict[str, int] | None = None,
        source_roots: list[str] | None = None,
        timing: bool = True,
        flops: bool = True,
        root_name: str = "",
    ) -> None:
        self.module = module
        self.ops = ops
        self.values_summary = values_summary
        self.functions = list(functions or [])
        self.rules = [StageRule(p, s) for p, s in (stage_rules or [])]
        self._symbol_tables: dict[tuple, SymbolTable] = {}  # `set_symbols`
        self.set_symbols(symbols or {})
        self.roots = tuple(str(r).rstrip("/") + "/" for r in (source_roots or []))
        self.timing = timing
        self.count_flops = flops
        self.root_name = root_name
        self.events: list[dict] = []
        self.error: dict | None = None
        self._stack: list[dict] = []
        self._phase: str | None = None  # the innermost open phase
        self._busy = False
        self._in_counted = False
        self._patched: list[tuple[object, str, object, object]] = []  # (owner, name, what it was or _INHERITED, ours)
        self._handles: list = []  # torch hooks of ours, after modules' own forward hooks (`_AfterHooks`)
        self._done = False
        self._stats = values.ValueStats()
        self._names: dict[int, str] = {}
        self._params: dict[int, dict] = {}
        self._stage_cache = _STAGE_CACHES.setdefault(tuple(stage_rules or ()), {})  # shared by traces with the same rules
        self._locations = _LOCATIONS.setdefault(self.roots, {})  # shared by traces with the same roots
        if len(self._locations) > 4096:  # e.g. many generated modules' code objects: start afresh
            self._locations.clear()
        self._modes: list = []
        self._t0 = 0.0

    # --- context management -----------------------------------------------------------------
    def __enter__(self) -> "Trace":
        if self._done or self._patched:
            raise RuntimeError("a trace records one run: make a new one with trace(...)")
        try:
            for target in self.functions:  # first: a module's forward may be one of them
                self._wrap_function(target)
            if self.module is not None:
                self._install_hooks(self.module)
                self._patch(nn.Module, "__setstate__", lambda module, state: _setstate_untraced(module, state))  # a function of this trace's: _patch tags it
            if self.ops:
                self._modes.append(_FunctionMode(self))
            elif self.count_flops:
                self._patch_flop_counters()
            for mode in self._modes:
                mode.__enter__()
        except BaseException:
            self._remove()
            raise
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._remove()
        self._done = self._busy = True  # a wrapper of ours left in place (see `_remove`) only passes calls on
        if exc is not None:
            self.error = self._describe_error(exc, tb)
            for event in reversed(self._stack):  # calls the exception unwound past
                event.setdefault("error", type(exc).__name__)
                self._close(event, None, failed=True)
            self._stack.clear()
        try:
            self._stats.resolve()
        finally:  # events hold no code objects or raw records past the trace, even if reading back failed
            self._finish()
            self.events.sort(key=lambda e: e["seq"])
        return False

    def _remove(self) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(None, None, None)
        self._modes.clear()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for owner, name, previous, ours in reversed(self._patched):
            self._unpatch(owner, name, previous, ours)
        self._patched.clear()

    def _patch(self, owner, name: str, ours) -> None:
        """Set `owner.name` to `ours` (a module's `forward`, a wrapped function, a FLOP counter)
        until exit. `ours` (or the function inside a staticmethod) is tagged with this trace and
        what it replaced, so that traces ended out of order can be told apart."""
        attrs = vars(owner)
        previous = attrs.get(name, _INHERITED) if isinstance(owner, (type, nn.Module)) else getattr(owner, name)
        fn = _unwrapped(ours)
        fn._trace_owner, fn._trace_previous = self, previous
        self._patched.append((owner, name, previous, ours))
        if isinstance(owner, nn.Module):
            attrs[name] = ours  # directly: nn.Module.__setattr__ would only get there slower
        else:
            setattr(owner, name, ours)

    def _unpatch(self, owner, name: str, previous, ours) -> None:
        """Put back what `owner.name` was, unless it has changed since `_patch` (then the change
        stays); past what traces that ended meanwhile had put there."""
        attrs = vars(owner)
        if attrs.get(name) is not ours:
            return
        while previous is not _INHERITED and _ended(previous):
            previous = _unwrapped(previous)._trace_previous
        if isinstance(owner, nn.Module):
            if previous is _INHERITED:
                del attrs[name]
            else:
                attrs[name] = previous
        elif previous is _INHERITED:
            delattr(owner, name)
        else:
            setattr(owner, name, previous)

    def set_symbols(self, symbols: dict[str, int]) -> None:
        """Shape symbols for the events recorded from now on (sizes may only be known mid-run).
        A table set again (every decode step sets S = 1) is the same object, labels remembered."""
        key = tuple(symbols.items())
        table = self._symbol_tables.get(key)
        if table is None:
            table = self._symbol_tables[key] = SymbolTable(symbols)
        self.symbols = table

    # --- phases and stages ------------------------------------------------------------------
    @contextmanager
    def phase(self, name: str, **info):
        """Group what runs inside under a named phase (e.g. `prefill`, `decode`); every event
        records the innermost phase it ran in."""
        event = self._open("phase", name, name, None, info=info)
        self._materialize(event, {})  # handed to the caller: complete at once
        event["phase"] = name
        outer, self._phase = self._phase, name
        try:
            yield event
        except BaseException as exc:
            event["error"] = type(exc).__name__
            raise
        finally:
            self._phase = outer
            if self._stack and self._stack[-1] is event:
                self._stack.pop()
                self._close(event, None)

    def record(self, name: str, outputs, inputs=None, **info) -> dict:
        """A point event for a step computed outside any module (e.g. the chosen next token)."""
        event = self._open("step", name, name, inputs or (), info=info)
        self._stack.pop()
        self._close(event, outputs)
        self._materialize(event, {})  # handed to the caller: complete at once
        return event

    def _stage_for(self, path: str) -> str | None:
        if path not in self._stage_cache:
            self._stage_cache[path] = next((r.stage for r in self.rules if r.regex.search(path)), None)
        return self._stage_cache[path]

    # --- modules -------------------------------------------------------------------------------
    def _install_hooks(self, root: nn.Module) -> None:
        self._walk(root, self.root_name)

    def _walk(self, module: nn.Module, name: str) -> int:
        """One pass over the tree, depth first: each module's dotted path (the first, if it is
        shared), its own and total parameter counts, and its two hooks, once per module.
        Returns the total count."""
        known = self._params.get(id(module))
        if known is not None:  # a shared module, met again: counted in every parent, hooked once
            return known["total"]
        self._names[id(module)] = name
        own = [p for p in module._parameters.values() if p is not None]
        info = self._params[id(module)] = {"count": sum(p.numel() for p in own),
                                           "dtype": str(own[0].dtype).removeprefix("torch.") if own else None, "total": 0}
        children = [(f"{name}.{key}" if name else key, child) for key, child in module._modules.items() if child is not None]
        info["total"] = info["count"] + sum(self._walk(child, path) for path, child in children)
        self._wrap_forward(module)
        return info["total"]

    def _wrap_forward(self, module: nn.Module) -> None:
        """The module's two hooks, as one wrapper set on the instance: `nn.Module.__call__` finds
        `module.forward` there and calls it in place of the class's, after the user's pre-hooks
        and before their forward hooks (a module that has forward hooks also gets one of ours,
        last: `_AfterHooks`). It sees keyword arguments, closes its event when the
        forward raises, and is removed on exit.
        (Doing nothing, torch's hook pair cost 1.04x–1.11x on a tiny generation and these
        wrappers 0.99x–1.04x: `benchmarks/RESULTS.md`, fifth session.)"""
        attrs = module.__dict__  # `_patch`, inlined: it runs for every module of every trace
        inner = module.forward
        forward = _Forward(self, module, inner, attrs.get("forward", _INHERITED), self._module_info(module, inner))
        self._patched.append((module, "forward", forward._trace_previous, forward))
        attrs["forward"] = forward  # directly: nn.Module.__setattr__ would only get there slower
        if module._forward_hooks or _GLOBAL_FORWARD_HOOKS:
            self._hook_after(forward)

    def _hook_after(self, forward: _Forward) -> None:
        """Our `_AfterHooks` on forward's module, after every forward hook it has now (the
        user's, global ones included): (re)registered last."""
        if forward.after is not None:
            forward.after.remove()
        forward.after = forward.module.register_forward_hook(_AfterHooks(forward), always_call=True)
        self._handles.append(forward.after)

    def _arg_names(self, fn, remember: bool = True) -> list[str]:
        """fn's parameter names (a bound method's without `self`), remembered across traces
        unless `remember` is off."""
        key = (getattr(fn, "__func__", fn), inspect.ismethod(fn))  # bound or not: with `self` or without
        names = _ARG_NAMES.get(key)
        if names is None:
            try:
                names = list(inspect.signature(fn).parameters)  # bound methods already omit self
            except (TypeError, ValueError):
                names = []
            if remember:
                _ARG_NAMES[key] = names
        return names

    def _module_info(self, mod: nn.Module, forward) -> tuple:
        """(path, class name, stage, parameter info, argument names of its forward), worked out
        when the module is hooked and kept for the trace."""
        path = self._names[id(mod)]
        while isinstance(forward, _Forward):  # past other traces' wrappers
            forward = forward.__wrapped__
        # A class's forward is remembered across traces; an instance's own callable is not: it
        # may hold its module alive (and another trace's wrapper, that trace).
        names = self._arg_names(forward, remember=inspect.ismethod(forward))
        return path, type(mod).__name__, self._stage_for(path), self._params[id(mod)], names

    def _module_failed(self, event: dict, t0: float, exc: BaseException) -> None:
        """Close a module's event whose forward raised (`_Forward.__call__`)."""
        t1 = perf_counter()
        self._busy = True
        try:
            if self._stack and self._stack[-1] is event:
                self._stack.pop()
            event["error"] = type(exc).__name__
            self._close(event, None, failed=True)
            if self.timing:
                event["time_ms"] = (t1 - t0) * 1000  # rounded in _finish
        finally:
            self._busy = False

    # --- functions -----------------------------------------------------------------------------
    def _wrap_function(self, target: str) -> None:
        """`pkg.mod:func` or `pkg.mod:Class.method`: replaced by a recording wrapper until exit."""
        module_name, _, attr_path = target.partition(":")
        owner = importlib.import_module(module_name)
        *parents, name = attr_path.split(".")
        for p in parents:
            owner = getattr(owner, p)
        original = inspect.getattr_static(owner, name) if isinstance(owner, type) else getattr(owner, name)
        fn = original.__func__ if isinstance(original, (staticmethod, classmethod)) else original
        ours = getattr(fn, "_trace_owner", None) is not None  # another trace's wrapper: its names are not remembered (it would stay alive)
        label = attr_path
        tracer = self

        def wrapper(*args, **kwargs):
            if tracer._busy:
                return fn(*args, **kwargs)
            tracer._busy = True
            try:
                inputs = values.named_args(args, kwargs, tracer._arg_names(fn, remember=not ours))
                inputs.pop("self", None)
                if isinstance(original, classmethod):
                    inputs.pop("cls", None)
                event = tracer._open("function", label, label, inputs)
            finally:
                tracer._busy = False
            try:
                out = fn(*args, **kwargs)
            except BaseException as exc:
                event["error"] = type(exc).__name__
                tracer._busy = True
                try:  # closed here: a caller may catch the exception and go on
                    if tracer._stack and tracer._stack[-1] is event:
                        tracer._stack.pop()
                    tracer._close(event, None, failed=True)
                finally:
                    tracer._busy = False
                raise
            tracer._busy = True
            try:
                if tracer._stack and tracer._stack[-1] is event:
                    tracer._stack.pop()
                tracer._close(event, out)
            finally:
                tracer._busy = False
            return out

        wrapper.__wrapped__ = fn
        wrapper.__name__ = getattr(fn, "__name__", name)
        wrapper.__qualname__ = getattr(fn, "__qualname__", name)
        self._patch(owner, name, type(original)(wrapper) if isinstance(original, (staticmethod, classmethod)) else wrapper)

    def _patch_flop_counters(self) -> None:
        """Without ops recording, count FLOPs by wrapping the few functions that carry them: far
        cheaper than a mode that sees every torch call."""
        tracer = self
        for owner, name in flops.PATCH_TARGETS:
            original = getattr(owner, name)

            def counter(*args, __original=original, **kwargs):
                if tracer._in_counted or tracer._busy or not tracer._stack:
                    return __original(*args, **kwargs)  # e.g. torch.mm inside a Python meta kernel of F.linear
                tracer._in_counted = True
                try:
                    out = __original(*args, **kwargs)
                finally:
                    tracer._in_counted = False
                n = flops.count(__original, args, kwargs, out)
                if n:
                    tracer._stack[-1]["flops"] = tracer._stack[-1].get("flops", 0) + n
                return out

            self._patch(owner, name, counter)

    # --- ops -------------------------------------------------------------------------------------
    def _record_op(self, func, args, kwargs, out) -> None:
        name = resolve_name(func) or getattr(func, "__qualname__", repr(func))
        name = name.removeprefix("torch._C._TensorBase.").removeprefix("torch._C.TensorBase.")
        if name.startswith("torch.Tensor.") or "." not in name:
            name = "Tensor." + name.rsplit(".", 1)[-1]
        parent = self._stack[-1]
        inputs = {f"arg{i}": a for i, a in enumerate(args)}
        inputs.update(kwargs)
        event = self._open("op", parent["path"], name, inputs)
        self._stack.pop()
        self._close(event, out, stats=False)

    # --- events ------------------------------------------------------------------------------------
    def _open(self, kind: str, path: str, cls: str, inputs, info=None) -> dict:
        """A new open event, for a phase, a step, a wrapped function or an op (a module's:
        `_Forward.__call__`), with its `inputs` described. Its source line is the first frame, from
        our caller's caller up, that is not torch's or the tracer's."""
        frame = source.caller_frame(2)
        event = self._head(kind, path, cls, None if kind in ("op", "phase") else self._stage_for(path))
        if info:
            event["info"] = info
        if frame is not None:
            event["src"] = (frame.f_code, frame.f_lineno)  # see `_materialize`
        event["inputs"] = self._describe(inputs, stats=False)
        event["_symbols"] = self.symbols
        if self.timing:
            event["_t"] = time.perf_counter()
        self.events.append(event)
        self._stack.append(event)
        return event

    def _head(self, kind: str, path: str, cls: str, stage: str | None) -> dict:
        """The fields every event starts with, in the log's order. Its parent is the innermost
        open event, whose stage it takes when it has none of its own."""
        stack = self._stack
        parent = stack[-1] if stack else None
        return {
            "seq": len(self.events),
            "kind": kind,
            "stage": stage or (parent["stage"] if parent else None),
            "path": path,
            "name": cls,
            "parent": parent["seq"] if parent else None,
            "depth": len(stack),
            "phase": self._phase,
        }

    def _location(self, code, line: int) -> dict:
        """file:line, function and source text of a line of `code`; one dict per line, shared by
        every event from it (in this trace and later ones) and never mutated. Keyed by the code
        object's id (hashing a code object hashes its contents), checked against the object."""
        lines = self._locations.get(id(code))
        if lines is None or lines[0] is not code:
            lines = self._locations[id(code)] = (code, {})
        src = lines[1].get(line)
        if src is None:
            src = lines[1][line] = source.location_at(code, line, self.roots)
            src.pop("_abs", None)
        return src

    def _close(self, event: dict, output, failed: bool = False, stats: bool = True) -> None:
        event["outputs"] = self._describe(output, stats=stats and self.values_summary) if output is not None else []
        if failed:
            event.setdefault("error", "exception")
        t = event.pop("_t", None)
        if t is not None:
            event["time_ms"] = (time.perf_counter() - t) * 1000  # rounded in _finish

    def _describe(self, tree, stats: bool) -> list[dict]:
        """Shapes now; symbol labels later (`_finish`), value summaries queued on the device."""
        items, tensors = values.describe_with_tensors(tree)
        if stats:
            for item, x in tensors:
                self._stats.add(item, x)
        return items

    def _materialize(self, event: dict, memo: dict) -> None:
        """What the hot path recorded raw, described: the source line from its code object and
        number, inputs from `values.call_record`, a lone tensor output from its metadata. `memo`
        keeps descriptions for records that come back (every decode step repeats most of the
        previous one's); each event gets its own shallow copy (the shape lists are shared: nothing changes them)."""
        src = event.get("src", False)
        if type(src) is tuple:
            event["src"] = self._location(*src)
        elif src is None:
            del event["src"]  # no frame of the caller's own (e.g. a call from torch alone)
        raw = event["inputs"]
        if type(raw) is tuple:
            key = values.record_key(raw)
            items = memo.get(key) if key is not None else None
            if items is None:
                items = values.describe_record(raw)
                if key is not None:
                    memo[key] = items
            event["inputs"] = [dict(item) for item in items]
        raw = event.get("outputs")
        if type(raw) is tuple:  # (shape, dtype, device)
            item = memo.get(raw)
            if item is None:
                item = memo[raw] = values.meta_item("", raw)
            event["outputs"] = [dict(item)]

    def _finish(self) -> None:
        """After the run: describe what the hot path recorded raw (`_materialize`); round the
        timings; label every shape with the symbols in force when it was recorded."""
        memo: dict = {}
        for event in self.events:
            self._materialize(event, memo)
            if "time_ms" in event:
                event["time_ms"] = round(event["time_ms"], 3)
            table = event.pop("_symbols", None)
            if table is None or not table.symbols:
                continue
            hints = source.shape_hints(event["src"]["code"]) if "src" in event else ()
            for item in event["inputs"] + event.get("outputs", []):
                shape = item.get("shape")
                if shape is not None:
                    sym = table.label(shape, hints)
                    if any(s is not None for s in sym):
                        item["sym"] = sym

    def _describe_error(self, exc: BaseException, tb) -> dict:
        last = None
        while tb is not None:
            filename = tb.tb_frame.f_code.co_filename
            if not filename.startswith(source._SKIP_PREFIXES):
                last = tb
            tb = tb.tb_next
        info = {"type": type(exc).__name__, "message": str(exc).splitlines()[0] if str(exc) else ""}
        if last is not None:
            loc = source.location(last.tb_frame, self.roots)
            loc["line"] = last.tb_lineno
            loc["code"] = linecache.getline(loc.pop("_abs"), last.tb_lineno).strip()
            info["src"] = loc
        open_events = [e for e in self.events if e.get("error")]
        innermost = max(open_events, key=lambda e: e["depth"], default=None)
        if innermost is not None:
            info["stage"] = innermost.get("stage")
            info["path"] = innermost.get("path")
        return info

    def save(self, path, header: dict | None = None, summary: dict | None = None) -> None:
        from .log import write_log

        write_log(path, self, header=header, summary=summary)


def trace(module: nn.Module | None = None, *, ops: bool = False, **options) -> Trace:
    """Record every module call (and, with `ops=True`, every torch function) while active."""
    return Trace(module, ops=ops, **options)
