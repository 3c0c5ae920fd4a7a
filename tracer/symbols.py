"""Label concrete sizes with the project's shape letters.

The caller supplies a table {symbol: size}. A dim is labelled by, in order:
1. the shape comment on the source line (`# [B, I, C, N, D]`), if every entry of one of its
   groups evaluates to the concrete size at that position (so coinciding sizes, say B = I = 1
   or C = 4 = a table's 4 rows, take the letter the code's author wrote);
2. otherwise, for sizes above MIN_GUESS, the one symbol whose size is unique in the table.
   Small sizes (1, 2, 4, 8 …) coincide too often to guess, and a size that two symbols share
   is never guessed: such dims stay plain numbers rather than risk a wrong letter.
"""

from __future__ import annotations

import re
from functools import lru_cache

MIN_GUESS = 16
_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z_0-9]*)|(\*\*|[-+*/()]))")
_IMPLICIT = re.compile(r"(\d)([A-Za-z_(])")  # 2T -> 2*T


@lru_cache(maxsize=4096)
def _compile(expr: str):
    """Validate a small arithmetic expression over names; return (code, names) or None."""
    text = _IMPLICIT.sub(r"\1*\2", expr.strip())
    pos, names = 0, []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            return None
        if m.group(2):
            names.append(m.group(2))
        pos = m.end()
    try:
        return compile(text.replace("/", "//"), "<shape>", "eval"), tuple(names)
    except SyntaxError:
        return None


def evaluate(expr: str, table: dict[str, int]) -> int | None:
    compiled = _compile(expr)
    if compiled is None:
        return None
    code, names = compiled
    if any(n not in table for n in names):
        return None
    try:
        return int(eval(code, {"__builtins__": {}}, table))  # names and operators were validated above
    except (ArithmeticError, TypeError, ValueError):
        return None


class SymbolTable:
    def __init__(self, symbols: dict[str, int]) -> None:
        self.symbols = dict(symbols)
        self.env = {**self.symbols, **_composites(self.symbols)}
        by_size: dict[int, list[str]] = {}
        for name, size in self.symbols.items():
            by_size.setdefault(size, []).append(name)
        self._memo: dict[tuple, list] = {}
        self.unique = {size: names[0] for size, names in by_size.items() if len(names) == 1 and size > MIN_GUESS}

    def label(self, shape: list[int], hints: tuple[tuple[str, ...], ...] = ()) -> list[str | None]:
        key = (tuple(shape), hints)
        labels = self._memo.get(key)
        if labels is None:
            labels = self._memo[key] = self._label(shape, hints)
        return list(labels)

    def _label(self, shape: list[int], hints: tuple[tuple[str, ...], ...]) -> list[str | None]:
        for group in hints:
            if len(group) == len(shape) and all(evaluate(e, self.env) == s for e, s in zip(group, shape)):
                return [e.replace(" ", "") for e in group]
        return [self.unique.get(s) for s in shape]

    def to_dict(self) -> dict[str, int]:
        return dict(self.symbols)


def _composites(symbols: dict[str, int]) -> dict[str, int]:
    """Run-together products like BI = B*I and BIC = B*I*C, as the code comments write them."""
    out = {}
    for name in ("BI", "BIC"):
        letters = list(name)
        if all(l in symbols for l in letters):
            size = 1
            for l in letters:
                size *= symbols[l]
            out[name] = size
    return out
