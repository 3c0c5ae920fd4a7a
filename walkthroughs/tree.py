"""Module trees of a trace, with repeated layers folded ("layers 0-31 ×32, identical signature")."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .summary import first_tensor, fmt_item, fmt_shape

_INDEX = re.compile(r"\.(\d+)$")


@dataclass
class Node:
    event: dict
    children: list["Node"] = field(default_factory=list)
    folded: list[int] = field(default_factory=list)  # indices of the identical siblings folded into this one
    pattern: str = ""
    interleaved: bool = False  # other calls ran between the folded siblings

    parent_path: str = ""

    @property
    def label(self) -> str:
        e = self.event
        name = (e["path"] or e["name"]) if e["kind"] != "op" else e["name"]  # an op's path is its module's
        if self.folded:
            first, last = self.folded[0], self.folded[-1]
            name = f"{self.pattern}.{first}-{last} ×{len(self.folded)}"
        if self.parent_path and name.startswith(self.parent_path + "."):
            name = name[len(self.parent_path) + 1 :]
        shape = _output_text(e.get("outputs", []))
        kind = e["name"] if e["kind"] == "module" else e["kind"]
        same = ", identical signature" if self.folded else ""
        same += ", in turn with other calls" if self.interleaved else ""
        return f"{name} ({kind}{same}) → {shape}" if shape else f"{name} ({kind}{same})"


def _output_text(outputs: list[dict]) -> str:
    """A node's output in a few characters: its shape in letters, a lone short list of ints in full
    (a canvas: (1120, 560)), or how many of a kind there are (e.g. 8 candidate canvases: 8 × 2 ints)."""
    if len(outputs) == 1:
        return fmt_item(outputs[0]).split(" = ")[0]
    first = first_tensor(outputs)
    if first is None:
        return ""
    if "shape" not in first and all(fmt_shape(o) == fmt_shape(first) for o in outputs):
        return f"{len(outputs)} × {fmt_shape(first)}"
    return fmt_shape(first).split(" = ")[0]


def build_tree(events: list[dict], root_seq: int) -> Node:
    """The calls under event `root_seq`: modules, functions, and torch ops where the log has them
    (`--ops`), each op a leaf under the call it ran in."""
    children: dict[int, list[dict]] = {}
    for e in events:
        if e.get("parent") is not None:
            children.setdefault(e["parent"], []).append(e)
    by_seq = {e["seq"]: e for e in events}

    def make(e: dict, parent_path: str = "") -> Node:
        return Node(e, [make(c, e["path"]) for c in children.get(e["seq"], [])], parent_path=parent_path)

    return fold(make(by_seq[root_seq]))


def signature(node: Node) -> tuple:
    e = node.event
    outs = tuple(tuple(o.get("shape", ())) for o in e.get("outputs", []) if "shape" in o)
    return (e["name"], outs, tuple(signature(c) for c in node.children))


def fold(node: Node) -> Node:
    """Group siblings with the same path pattern (`layers.N`) and signature; keep the first. Ops
    stay as they are: an op's path is the module it ran in, not a layer of its own."""
    node.children = [fold(c) for c in node.children]
    kept: list[Node] = []
    groups: dict[tuple, Node] = {}
    last: dict[tuple, int] = {}  # key -> position among the children of the group's latest member
    for position, child in enumerate(node.children):
        m = _INDEX.search(child.event["path"]) if child.event["kind"] != "op" else None
        if not m:
            kept.append(child)
            continue
        pattern = child.event["path"][: m.start()]
        key = (pattern, signature(child))
        if key in groups:
            groups[key].folded.append(int(m.group(1)))
            groups[key].interleaved |= position != last[key] + 1
            last[key] = position
            continue
        last[key] = position
        child.pattern = pattern
        child.folded = [int(m.group(1))]
        groups[key] = child
        kept.append(child)
    for child in kept:
        if len(child.folded) == 1:
            child.folded, child.interleaved = [], False
    node.children = kept
    return node


def walk(node: Node, depth: int, level: int = 0):
    """(level, node) pairs down to `depth` levels below the root."""
    yield level, node
    if level < depth:
        for child in node.children:
            yield from walk(child, depth, level + 1)
