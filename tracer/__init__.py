"""A generic recorder for PyTorch modules: module calls, wrapped functions, torch ops, stages.

    from tracer import trace
    with trace(module, ops=False) as t:
        module(x)
    t.events
    t.save("run.jsonl")
"""

from .capture import Trace, trace
from .log import SCHEMA_VERSION, LogError, load_log

__all__ = ["Trace", "trace", "load_log", "LogError", "SCHEMA_VERSION"]
