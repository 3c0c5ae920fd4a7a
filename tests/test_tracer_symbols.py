from tracer.source import shape_hints
from tracer.symbols import SymbolTable, evaluate

TABLE = SymbolTable({"B": 1, "I": 1, "C": 4, "N": 1601, "N8": 1608, "D": 4096, "W": 1280, "L": 5, "tiles": 4, "S": 20})


def test_hint_from_the_source_line_labels_coinciding_sizes():
    hints = shape_hints("x = f(x)  # [B, I, C, N, D]")
    assert TABLE.label([1, 1, 4, 1601, 4096], hints) == ["B", "I", "C", "N", "D"]


def test_products_and_run_together_symbols():
    hints = shape_hints("x, t = g(x)  # [BI, C*N8, W], [BI, C*N8, W, L]")
    assert TABLE.label([1, 6432, 1280, 5], hints) == ["BI", "C*N8", "W", "L"]
    assert TABLE.label([1, 6432, 1280], hints) == ["BI", "C*N8", "W"]


def test_a_hint_that_does_not_match_is_ignored():
    hints = shape_hints("y = h(x)  # [B, S, D]")
    assert TABLE.label([1, 4, 4, 1280], hints) == [None, None, None, "W"]


def test_small_or_shared_sizes_are_never_guessed():
    # 4 is both C and the tile table's size: without a hint neither letter is claimed.
    assert TABLE.label([4, 4, 1, 1280]) == [None, None, None, "W"]
    # 1 is B and I; 5 is L but small sizes coincide too easily to guess.
    assert TABLE.label([1, 5, 1601]) == [None, None, "N"]


def test_evaluator_accepts_arithmetic_only():
    env = TABLE.env
    assert evaluate("W*(L+1)", env) == 7680
    assert evaluate("2N8", env) == 3216
    assert evaluate("N8/8", env) == 201
    assert evaluate("__import__('os')", env) is None
    assert evaluate("B.__class__", env) is None
    assert evaluate("unknown", env) is None


def test_shape_hints_parse_only_the_comment():
    assert shape_hints("y = x[0]  # [B, S, D] and [B, S]") == (("B", "S", "D"), ("B", "S"))
    assert shape_hints("y = x[0, 1]") == ()


def test_a_size_an_expression_shares_is_not_guessed_as_a_letter():
    # Two letters for one size (here H = 64 and the expression Dh/2 = 64): an unhinted dim of 64
    # is left unlabelled rather than guessed; a hint on the source line names it.
    table = SymbolTable({"S": 18, "H": 64, "Dh": 128, "Dh/2": 64})
    assert table.label([18, 64]) == ["S", None]
    assert table.label([18, 64], shape_hints("h = layer(h, freqs_cis)  # [B, S, D]; freqs_cis [S, Dh/2]")) == ["S", "Dh/2"]
