"""The command a page prints to regenerate itself: it names every option the run used."""

import re
import shlex
import subprocess

import pytest

from PIL import Image
from typer.testing import CliRunner

from walkthroughs.cli import app
from walkthroughs.regenerate import regenerate_command, shell_quote
from walkthroughs.summary import visible

runner = CliRunner()


def header(**changes) -> dict:
    base = {"model": {"preset": "11b-instruct", "config": {"max_seq_len": 512}}, "mode": "meta", "dtype": "bf16", "device": "meta",
            "inputs": {"image": {"file": "bundled"}, "prompt": "Describe this image in one sentence.", "layout": "chat"},
            "ops": False, "values": True, "timing": True,
            "generation": {"max_new_tokens": None, "temperature": 0.0, "top_p": 0.9, "seed": None}}
    for key, value in changes.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    return base


def test_the_defaults_need_no_options():
    assert regenerate_command(header(), "p.md") == ("llama-trace run --model 11b-instruct --format markdown -o p.md", None)


def test_every_option_that_differs_is_named():
    h = header(model={"preset": "tiny", "config": {"max_seq_len": 1024}}, mode="real", dtype="fp32", device="cpu", ops=True,
               values=False, timing=False, inputs={"image": {"file": "cat 1.png"}, "prompt": "What's here?", "layout": "completion"},
               generation={"max_new_tokens": 4, "temperature": 0.7, "top_p": 0.8, "seed": 5})
    command, note = regenerate_command(h, "p.md")
    assert shlex.split(command) == ["llama-trace", "run", "--model", "tiny", "--image", "cat 1.png", "--prompt", "What's here?",
                                    "--layout", "completion", "--dtype", "fp32", "--max-seq-len", "1024", "--max-new-tokens", "4",
                                    "--temperature", "0.7", "--top-p", "0.8", "--seed", "5", "--ops", "--no-values", "--no-timing",
                                    "--format", "markdown", "-o", "p.md"]
    assert note is None


def test_sampling_at_the_default_top_p_leaves_top_p_out():
    h = header(generation={"max_new_tokens": 4, "temperature": 0.7, "top_p": 0.9, "seed": 5})
    assert "--top-p" not in shlex.split(regenerate_command(h, "p.md")[0])


def test_checkpoints_long_prompts_and_old_logs_say_what_they_need():
    command, note = regenerate_command(header(model={"preset": "checkpoint ck", "checkpoint": "~/ck", "config": {"max_seq_len": 512}}, mode="real"), "p.md")
    assert command.startswith("llama-trace run --checkpoint '~/ck' --layout chat ") and note is None
    command, note = regenerate_command(header(model={"preset": "checkpoint ck", "config": {"max_seq_len": 512}}, mode="real"), "p.md")
    assert "--checkpoint DIR" in command and note.startswith("DIR: the checkpoint folder")
    command, note = regenerate_command(header(inputs={"prompt": "line one\nline two"}), "p.md")
    assert "--prompt-file prompt.txt" in command and note.startswith("prompt.txt:")


def test_the_printed_command_writes_the_same_page(tmp_path, monkeypatch):
    first = ["run", "--model", "tiny", "--image", "g.png", "--prompt", "Hi `you`, what's this?<|eot_id|>", "--allow-special",
             "--max-new-tokens", "2", "--temperature", "0.7", "--seed", "3", "--depth", "3", "--no-timing", "-o", "a.md"]
    pages, args = [], first
    for name in ("first", "again"):  # two folders side by side: the same links to the source
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        Image.new("RGB", (300, 200), (10, 200, 30)).save("g.png")
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        pages.append((tmp_path / name / "a.md").read_text(encoding="utf-8"))
        command = re.search(r"regenerate it with (`+) ?(.+?) ?\1[ .(]", pages[0])[2]  # a longer fence: the prompt has backticks
        args = shlex.split(command)[1:]
    assert "--seed 3" in command and "--allow-special" in command and "--depth 3" in command
    assert pages[1] == pages[0]


def test_the_page_is_named_as_the_user_gave_it_beside_the_image(tmp_path, monkeypatch):
    """Both paths relative to where the run started: `-o docs/a.md` stays so (not `a.md`, which
    from there would write elsewhere), and the page says what they are relative to."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (300, 200), (10, 200, 30)).save("photos/g.png")
    result = runner.invoke(app, ["run", "--model", "tiny", "--image", "photos/g.png", "--no-timing", "-o", "docs/a.md"])
    assert result.exit_code == 0, result.output
    line = next(line for line in (tmp_path / "docs/a.md").read_text(encoding="utf-8").splitlines() if "regenerate it with" in line)
    assert "--image photos/g.png" in line and "-o docs/a.md`" in line
    assert "(paths relative to the folder the run started in)" in line
    assert regenerate_command(header(), "p.md")[1] is None  # a page beside where it ran: nothing to say
    assert regenerate_command(header(), "/abs/p.md")[1] is None


def test_a_log_of_a_preset_this_version_lacks_still_gets_a_command():
    """A page rendered from a log whose preset this llama-trace does not know (an edited log, or
    another version's) once stopped with a traceback here."""
    command, note = regenerate_command(header(model={"preset": "nope", "config": {"max_seq_len": 512}}), "p.md")
    assert command.startswith("llama-trace run --model nope --mode meta ") and note == "this llama-trace has no preset 'nope'"


@pytest.mark.parametrize("arg", ["plain.png", "a b.png", "img\x1b[1mB.png", "it's\x07", "back\\slash\x1b", "c1\x85.png", "tab\there"])
def test_a_path_with_control_characters_is_quoted_so_bash_gives_it_back(arg):
    """The regenerate command names a file whose name holds an escape in bash's $'...' form: it
    shows the escape, and the shell hands the program the very same name (a visible \\x1b in
    plain quotes named another file)."""
    quoted = shell_quote(arg)
    assert visible(quoted) == quoted  # nothing raw on the page
    out = subprocess.run(["bash", "-c", f"printf %s {quoted}"], capture_output=True, check=True, env={"LC_ALL": "C.UTF-8"})
    assert out.stdout.decode("utf-8") == arg


def test_a_page_of_a_multi_line_prompt_writes_the_prompt_file_its_command_reads(tmp_path, monkeypatch):
    """A prompt no command line can hold goes to a file beside the page, named in the page's
    command: the command, run again as printed, writes the same page (it once named a
    prompt.txt that the user had to write by hand)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "q.txt").write_text("What is this?\nAnswer | briefly.\n", encoding="utf-8")
    result = runner.invoke(app, ["run", "--model", "tiny", "--prompt-file", "q.txt", "--no-timing", "-o", "docs/a.md"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "docs/a.md").read_text(encoding="utf-8")
    assert (tmp_path / "docs/a.prompt.txt").read_text(encoding="utf-8") == "What is this?\nAnswer | briefly.\n"
    command = re.search(r"regenerate it with (`+) ?(.+?) ?\1[ .(]", page)[2]
    assert "--prompt-file docs/a.prompt.txt" in command and "prompt.txt: the prompt" not in page
    again = runner.invoke(app, [*shlex.split(command)[1:], "--force"])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "docs/a.md").read_text(encoding="utf-8") == page
