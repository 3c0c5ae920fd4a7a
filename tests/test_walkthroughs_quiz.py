"""`llama-trace quiz`: seeded shape questions from a log, answered from a file (as CI and graders do) or typed."""

import re

import pytest
from logs import lines_of, logged
from typer.testing import CliRunner

from tracer.log import build_lines, load_log
from walkthroughs.cli import app
from walkthroughs.quiz import code_line, parse_answer, questions, symbol_env
from walkthroughs.run import run

runner = CliRunner()
N = 6


@pytest.fixture(scope="module")
def log_path(tmp_path_factory):
    result = run(None, preset="11b-instruct", timing=False)
    path = tmp_path_factory.mktemp("quiz") / "11b.jsonl"
    path.write_text("\n".join(build_lines(result.trace, result.header, result.summary)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def log(log_path):
    return load_log(log_path)


def quiz(log_path, tmp_path, answers, seed=7, n=N, *extra):
    file = tmp_path / "answers.txt"
    file.write_text("\n".join(answers) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["quiz", "--log", str(log_path), "--seed", str(seed), "--questions", str(n), "--answers", str(file), *extra],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def last_line(out):
    return out.rstrip("\n").splitlines()[-1]


def test_all_right(log, log_path, tmp_path):
    qs = questions(*log, N, 7)
    out = quiz(log_path, tmp_path, [str(q.answer) for q in qs])  # "[1, 1, 4, 1601, 4096]"
    assert last_line(out) == f"score: {N}/{N}"
    assert out.count("  right: ") == N
    # each answer is explained with the stage's annotation
    assert qs[0].explanation and qs[0].explanation.splitlines()[0] in out
    assert all("`" not in q.explanation for q in qs)  # plain text: the prose's code spans lose their Markdown backticks


def test_all_right_comma_form(log, log_path, tmp_path):
    qs = questions(*log, N, 7)
    out = quiz(log_path, tmp_path, [",".join(map(str, q.answer)) for q in qs])
    assert last_line(out) == f"score: {N}/{N}"


def test_all_wrong(log, log_path, tmp_path):
    qs = questions(*log, N, 7)
    out = quiz(log_path, tmp_path, [str(q.answer + [1]) for q in qs])
    assert last_line(out) == f"score: 0/{N}"
    assert out.count("  wrong") == N and qs[0].expected in out


def test_symbolic_answers(log, log_path, tmp_path):
    header, _, _ = log
    env = symbol_env(header)
    assert parse_answer("[B, I, C, N, D]", env) == [1, 1, 4, 1601, 4096]
    assert parse_answer("[BI, C*N8, W]", env) == [1, 6432, 1280]
    assert parse_answer("(B, S, K)", env) == [1, 18, 128256]
    assert parse_answer("[B, S, D] = [1, 18, 4096]", env) == [1, 18, 4096]
    qs = questions(*log, N, 7)
    # the letters the trace gave each dim, numbers where it gave none
    answers = ["[" + ", ".join(s or str(d) for s, d in zip(q.answer_sym, q.answer)) + "]" for q in qs]
    assert any(re.search(r"[A-Z]", a) for a in answers)
    out = quiz(log_path, tmp_path, answers)
    assert last_line(out) == f"score: {N}/{N}"


def test_malformed_answers_are_wrong_not_a_crash(log, log_path, tmp_path):
    header, _, _ = log
    env = symbol_env(header)
    for bad in ("", "foo", "[1,,2]", "[B, Q, D]", "1; 2", "[[1, 2]]", "B**", "1/0"):
        assert parse_answer(bad, env) is None, bad
    out = quiz(log_path, tmp_path, ["", "foo", "[1,,2]", "[B, Q, D]", "1/0"])  # 5 lines for 6 questions
    assert last_line(out) == f"score: 0/{N}"
    assert "could not read it as a shape" in out and "your answer: (none)" in out


def test_question_order_is_seeded(log, log_path, tmp_path):
    assert [q.stage for q in questions(*log, N, 7)] == [q.stage for q in questions(*log, N, 7)]
    assert [q.stage for q in questions(*log, N, 7)] != [q.stage for q in questions(*log, N, 8)]
    first = quiz(log_path, tmp_path, [])
    assert first == quiz(log_path, tmp_path, [])
    titles = re.findall(r"^Question \d+/\d+: (\S+)", first, re.M)
    assert titles == [q.stage for q in questions(*log, N, 7)]


def test_question_shows_inputs_symbols_and_code_without_the_answer(log, log_path, tmp_path):
    out = quiz(log_path, tmp_path, [], 7, 40)  # more than there are: every stage with a tensor output
    assert "D=4096" in out and "C*N8=6432" in out
    assert "# [" not in out  # the shape comment on the code line would give the answer away
    assert code_line({"code": "x = self.ln_post(x)  # [BI, C*N8, W]"}) == "x = self.ln_post(x)"
    n = len(re.findall(r"^Question ", out, re.M))
    assert 20 < n < 40 and last_line(out) == f"score: 0/{n}"


def test_interactive_reads_stdin(log, log_path):
    qs = questions(*log, 2, 1)
    typed = f"{qs[0].answer}\nnonsense\n"
    result = runner.invoke(app, ["quiz", "--log", str(log_path), "--seed", "1", "--questions", "2"], input=typed)
    assert result.exit_code == 0, result.output
    assert last_line(result.stdout) == "score: 1/2"


@pytest.mark.parametrize("args, message", [
    (["--log", "x.jsonl", "--model", "tiny"], "either --log or --model"),
    (["--questions", "0"], "--questions must be at least 1"),
    (["--log", "/no/such.jsonl", "--answers", "/dev/null"], "/no/such.jsonl not found: pass a log written by `llama-trace run"),
    (["--answers", "/no/such/answers.txt"], "answers file not found: /no/such/answers.txt; pass an existing file with --answers"),
    (["--answers", "."], "is a folder, not a file; pass an answers file with --answers"),
])
def test_errors_are_one_line(args, message):
    result = runner.invoke(app, ["quiz", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_model_preset(tmp_path):
    file = tmp_path / "a.txt"
    file.write_text("[1]\n")
    result = runner.invoke(app, ["quiz", "--model", "tiny", "--seed", "0", "--questions", "2", "--answers", str(file)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "quiz · tiny" in result.stdout and last_line(result.stdout) == "score: 0/2"


def test_decode_log_uses_the_prefill_s(tmp_path):
    # a multi-step run: the header records the prefill's symbols (S = the prompt), decode steps S = 1
    from walkthroughs.diff import Log, compare

    header, events, summary, _ = logged("tiny", max_new_tokens=2)
    assert header["symbols"]["S"] == summary["prompt_tokens"]
    env = symbol_env(header, events)
    assert env["S"] == summary["prompt_tokens"] == 18
    qs = questions(header, events, summary, 50, 0)
    assert all(q.phase != "decode" for q in qs)
    with_s = [q for q in qs if "S" in q.answer_sym]
    assert with_s and all(parse_answer("[" + ", ".join(s or str(d) for s, d in zip(q.answer_sym, q.answer)) + "]", env) == q.answer for q in with_s)
    # and a diff against itself reports no change of S, and the decode stages aligned
    d = compare(Log("a", header, events, summary), Log("b", header, events, summary))
    assert d.symbols == [] and all(s.status == "same" for s in d.stages)
    assert any(s.phase == "decode" for s in d.stages)


def test_interactive_end_of_input_stops_the_quiz(log, log_path):
    """Ctrl-D (the end of typed input) ends the quiz there, scoring the questions answered."""
    qs = questions(*log, 3, 1)
    result = runner.invoke(app, ["quiz", "--log", str(log_path), "--seed", "1", "--questions", "3"], input=f"{qs[0].answer}\n")
    assert result.exit_code == 0, result.output
    assert last_line(result.stdout) == "score: 1/1 (stopped at question 2 of 3: end of input)"
    assert "Question 3/3" not in result.stdout


def test_typing_q_stops_the_quiz(log, log_path):
    qs = questions(*log, 3, 1)
    result = runner.invoke(app, ["quiz", "--log", str(log_path), "--seed", "1", "--questions", "3"], input=f"{qs[0].answer}\nq\n")
    assert result.exit_code == 0, result.output
    assert last_line(result.stdout) == "score: 1/1 (stopped at question 2 of 3: q)"


def test_answers_from_standard_input(log, log_path):
    qs = questions(*log, 2, 1)
    result = runner.invoke(app, ["quiz", "--log", str(log_path), "--seed", "1", "--questions", "2", "--answers", "-"],
                           input=f"{qs[0].answer}\n{qs[1].answer}\n")
    assert result.exit_code == 0, result.output
    assert last_line(result.stdout) == "score: 2/2"


def test_other_ways_of_writing_a_shape_are_read(log):
    env = symbol_env(log[0])
    for written in ("1x18x4096", "1 × 18 × 4096", "torch.Size([1, 18, 4096])", "B x S x D"):
        assert parse_answer(written, env) == [1, 18, 4096], written


def test_a_letter_whose_size_only_coincides_is_wrong(tiny_log, tmp_path):
    """In tiny, D = W = 64: naming W for the text width gives the right numbers, for the wrong reason."""
    header, events, summary, _ = tiny_log
    q = next(q for q in questions(header, events, summary, 40, 0) if q.answer_sym[-1:] == ["D"])
    env = symbol_env(header, events)
    assert env["W"] == env["D"]
    log_file = tmp_path / "tiny.jsonl"
    log_file.write_text("\n".join(lines_of(header, events, summary)) + "\n", encoding="utf-8")
    for answer, verdict in (([*(s or str(d) for s, d in zip(q.answer_sym[:-1], q.answer[:-1])), "W"], "wrong: W = 64 only happens to equal D here"),
                            ([*(s or str(d) for s, d in zip(q.answer_sym, q.answer))], "right: ")):
        file = tmp_path / "answers.txt"
        file.write_text("\n" * (q.number - 1) + "[" + ", ".join(answer) + "]\n", encoding="utf-8")
        out = runner.invoke(app, ["quiz", "--log", str(log_file), "--seed", "0", "--questions", "40", "--answers", str(file)]).stdout
        assert verdict in out.split(f"Question {q.number}/", 1)[1].split("Question ", 1)[0], answer
