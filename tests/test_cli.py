"""The `llama-trace` command line, as a user types it."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from tracer.log import load_log
from walkthroughs.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_version_and_help_with_examples():
    assert invoke("--version").stdout.startswith("llama-trace ")
    out = invoke("--help").stdout
    assert "llama-trace run --model 90b-instruct --ops" in out
    assert "--no-timing" in invoke("run", "--help").stdout


def test_run_with_no_arguments_prints_the_stage_summary():
    # the real entry point, as a new user runs it, piped (plain text)
    proc = subprocess.run([sys.executable, "-m", "walkthroughs.cli", "run"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "11b-instruct" in out and "meta mode" in out
    for stage in ("image.canvas", "vision.patch_embed", "vision.local_layers", "xattn.cache", "text.cross_attention", "text.logits"):
        assert stage in out
    assert "[B, I, C, N, D]" in out and "[1, 1, 4, 1601, 4096]" in out
    assert "\x1b[" not in out  # no colour codes when piped


def test_json_log_render_and_determinism(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert invoke("run", "--model", "tiny", "--format", "json", "-o", str(a), "--no-timing").exit_code == 0
    assert invoke("run", "--model", "tiny", "--format", "json", "-o", str(b), "--no-timing").exit_code == 0
    assert a.read_bytes() == b.read_bytes()
    header = json.loads(a.read_text().splitlines()[0])
    assert header["model"]["preset"] == "tiny" and header["mode"] == "real"
    result = invoke("render", str(a))
    assert result.exit_code == 0 and "generated 1 token," in result.stdout and "text.logits" in result.stdout


def test_json_to_stdout_is_json_lines():
    result = invoke("run", "--model", "tiny", "--format", "json", "--no-timing")
    lines = result.stdout.splitlines()
    assert json.loads(lines[0])["type"] == "header" and json.loads(lines[-1])["type"] == "summary"


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--image", "/no/such/file.png"], "image not found"),
        (["run", "--prompt", "   "], "the prompt is empty"),
        (["run", "--model", "13b"], "Invalid value"),
        (["render", "/no/such/log.jsonl"], "/no/such/log.jsonl not found: pass a log written by"),
        (["run", "--model", "tiny", "--max-new-tokens", "-3"], "--max-new-tokens must be at least 1"),
        (["run", "--model", "tiny", "--device", "cuda"], "no CUDA GPU"),
        (["run", "--model", "tiny", "--device", "tpu"], "unknown --device"),
        (["run", "--model", "tiny", "--device", "cuda:x"], "unknown --device 'cuda:x'; use cpu, cuda or cuda:N (N a GPU's index)"),
        (["run", "--model", "tiny", "--device", "cuda:"], "unknown --device 'cuda:'"),
        (["run", "--format", "markdown"], "give the page path with -o"),
        (["run", "--model", "tiny", "--dtype", "fp16"], "Invalid value"),
        (["run", "--model", "tiny", "--layout", "poem"], "unknown --layout"),
        (["run", "--model", "tiny", "-o", "/"], "is a folder"),
        (["run", "--image", ""], "Invalid value for '--image': the path is empty"),  # not "." (typer's Path(""))
        (["run", "--model", "tiny", "-o", ""], "Invalid value for '-o' / '--output': the path is empty"),
        (["render", ""], "Invalid value for 'log': the path is empty"),
        (["diff", "a.jsonl", ""], "Invalid value for 'B': the path is empty"),
        (["quiz", "--answers", ""], "Invalid value for '--answers': the path is empty"),
        (["run", "--model", "tiny", "--temperature", "nan"], "--temperature must be a finite number >= 0 (got nan)"),
        (["run", "--model", "tiny", "--temperature", "inf"], "--temperature must be a finite number >= 0 (got inf)"),
        (["run", "--model", "tiny", "--temperature", "1e-45"], "too small to sample with (logits / temperature overflow): use 0"),
        (["run", "--model", "tiny", "--seed", str(2**64)], "--seed must fit in 64 bits"),
        (["run", "--model", "tiny", "--seed", str(-(2**63) - 1)], "--seed must fit in 64 bits"),
        (["run", "--model", "tiny", "--top-p", "2"], "--top-p must be in (0, 1] (got 2.0)"),
        (["run", "--stage", "nosuch"], "no stage id starts with 'nosuch'"),
        (["run", "--format", "json", "--stage", "vision"], "--stage chooses what a view shows; the json log always holds every stage"),
        (["run", "--depth", "-1"], "--depth must be 0 or more"),
        (["run", "--device", "cuda"], "11b-instruct runs in meta mode"),
        (["run", "--checkpoint", "/no/such/folder", "--model", "90b"], "--checkpoint brings its own model"),
        (["run", "--prompt", "Hi", "--prompt-file", "p.txt"], "either with --prompt or with --prompt-file"),
        (["run", "--prompt-file", "/no/such/prompt.txt"], "prompt file not found: /no/such/prompt.txt"),
        (["run", "--max-seq-len", "1"], "--max-seq-len must be between 2 and 131072"),
        (["run", "--model", "tiny", "--max-seq-len", "8"], "--max-seq-len 8 leaves no room for a prompt"),
        (["run", "--model", "tiny", "--prompt", "word " * 600], "or raise --max-seq-len"),
    ],
)
def test_bad_input_gives_a_one_line_error(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [["run", "--model", "tiny"], ["render", "LOG"]])
def test_a_markdown_page_is_not_written_to_a_device(tmp_path, command):
    # Its pictures would go beside it: /dev/null.canvas.png.
    log = tmp_path / "a.jsonl"
    log.write_text("{}")
    args = [str(log) if a == "LOG" else a for a in command]
    before = set(pathlib.Path("/dev").glob("null.*.png"))
    result = runner.invoke(app, [*args, "--format", "markdown", "-o", "/dev/null"])
    assert result.exit_code == 2 and "-o /dev/null is not a regular file, and a Markdown page writes its pictures beside it" in result.output
    assert set(pathlib.Path("/dev").glob("null.*.png")) == before


def test_a_gpu_index_past_the_machine_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    result = runner.invoke(app, ["run", "--model", "tiny", "--device", "cuda:2"])
    assert result.exit_code == 2 and "--device cuda:2: this machine shows 2 CUDA GPU(s), numbered from 0" in result.output


def test_a_page_rendered_later_checks_the_traced_image(tmp_path):
    """render draws a page's image pictures only from the pixels the log traced: a moved image is
    named in a note (and can be given with --image), a changed one is refused in a note."""
    from PIL import Image

    Image.new("RGB", (400, 200), (200, 30, 30)).save(tmp_path / "red.png")
    log = tmp_path / "a.jsonl"
    invoke("run", "--model", "tiny", "--image", str(tmp_path / "red.png"), "-o", str(log), "--no-timing")

    def render(name, *extra):
        result = runner.invoke(app, ["render", str(log), "-o", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
        return result.output, sorted(p.name.split(".")[1] for p in tmp_path.glob(f"{pathlib.Path(name).stem}.*.png"))

    assert render("same.md") == (f"wrote {tmp_path / 'same.md'} and 4 files beside it (same.canvas.png, same.chunks.png,"
                                 " same.encoder_mask.png, same.xattn_mask.png)\n", ["canvas", "chunks", "encoder_mask", "xattn_mask"])
    (tmp_path / "red.png").rename(tmp_path / "moved.png")
    output, pictures = render("gone.md")
    assert f"note: the page leaves out the pictures of the image: {tmp_path / 'red.png'}, the image this log traced, is not there" in output
    assert pictures == ["encoder_mask", "xattn_mask"]
    output, pictures = render("given.md", "--image", str(tmp_path / "moved.png"))
    assert "note" not in output and pictures == ["canvas", "chunks", "encoder_mask", "xattn_mask"]
    assert (tmp_path / "given.canvas.png").read_bytes() == (tmp_path / "same.canvas.png").read_bytes()
    Image.new("RGB", (400, 200), (30, 200, 30)).save(tmp_path / "red.png")  # same size and mode, other pixels
    output, pictures = render("other.md")
    assert "is not the image this log traced (it is 400x200 RGB; the log's was 400x200 RGB, with other pixels)" in output
    assert pictures == ["encoder_mask", "xattn_mask"]
    for given, message in ((tmp_path / "red.png", "--image " + str(tmp_path / "red.png") + " is not the image this log traced"),
                           (log, "is not an image Pillow can read")):  # given by the user: an error, not a note
        result = runner.invoke(app, ["render", str(log), "-o", str(tmp_path / "bad.md"), "--image", str(given)])
        assert result.exit_code == 2 and message in result.output and not list(tmp_path.glob("bad*"))
    lines = log.read_text().splitlines()  # a log from before the digest: size and mode decide
    header = json.loads(lines[0])
    del header["inputs"]["image"]["pixels_sha256"]
    log.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    Image.new("RGB", (40, 20)).save(tmp_path / "red.png")
    output, _ = render("old.md")
    assert "the page leaves out the pictures of the image: " in output
    assert "is not the image this log traced (it is 40x20 RGB; the log's was 400x200 RGB)\n" in output
    result = runner.invoke(app, ["render", str(log), "--image", str(tmp_path / "red.png")])
    assert result.exit_code == 2 and "--image gives a page's pictures their image; it is for --format markdown or html" in result.output


def test_prompt_file_and_a_longer_context(tmp_path):
    # a prompt past the tiny model's 512 positions, read from a file, fits once the context is longer
    prompt = "Describe the picture.\n" + "word " * 600
    (tmp_path / "p.txt").write_text(prompt + "\n", encoding="utf-8")
    log = tmp_path / "a.jsonl"
    args = ["run", "--model", "tiny", "--prompt-file", str(tmp_path / "p.txt"), "--format", "json", "-o", str(log), "--no-timing"]
    assert "or raise --max-seq-len" in runner.invoke(app, args).output
    result = invoke(*args, "--max-seq-len", "1024")
    assert result.exit_code == 0, result.output
    header, events, summary = load_log(log)
    assert header["inputs"]["prompt"] == prompt  # one final newline dropped
    assert header["model"]["config"]["max_seq_len"] == 1024 and header["symbols"]["T"] == 1024
    assert summary["prompt_tokens"] > 512
    mask = next(e for e in events if e["stage"] == "masks.cross_attention")  # [B, T, I, C]
    assert mask["outputs"][0]["shape"][1] == 1024


def test_prompt_from_standard_input(tmp_path):
    log = tmp_path / "a.jsonl"
    result = runner.invoke(app, ["run", "--prompt-file", "-", "--format", "json", "-o", str(log), "--no-timing"], input="What is here?\n")
    assert result.exit_code == 0, result.output
    assert load_log(log)[0]["inputs"]["prompt"] == "What is here?"


def test_existing_output_needs_force(tmp_path):
    out = tmp_path / "page.txt"
    out.write_text("keep me")
    result = runner.invoke(app, ["run", "--model", "tiny", "-o", str(out)])
    assert result.exit_code == 2 and "--force" in result.output
    assert out.read_text() == "keep me"
    result = runner.invoke(app, ["run", "--model", "tiny", "-o", str(out), "--force"])
    assert result.exit_code == 0 and "text.logits" in out.read_text()


def test_the_console_script_reports_usage_errors_and_failed_writes_in_one_line():
    def script(*args, stdout=subprocess.PIPE):
        return subprocess.run([sys.executable, "-m", "walkthroughs.cli", *args], stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=300)

    proc = script("run", "--model", "13b")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "llama-trace: error: Invalid value for '--model': '13b' is not one of '11b', '11b-instruct', '90b', '90b-instruct',"
        " 'tiny'. (see llama-trace run --help)"]
    if __import__("os").path.exists("/dev/full"):  # Linux: every write fails with "no space left"
        with open("/dev/full", "w") as full:
            proc = script("run", "--model", "tiny", stdout=full)
        assert proc.returncode == 1 and proc.stderr.strip().splitlines() == ["llama-trace: error: cannot write the output: No space left on device"]


def test_output_through_a_symlink_a_fifo_and_a_dash(tmp_path):
    import threading

    target, link = tmp_path / "real.txt", tmp_path / "link.jsonl"
    target.write_text("old")
    link.symlink_to(target)
    assert invoke("run", "--format", "json", "-o", str(link), "--force").exit_code == 0
    assert link.is_symlink() and json.loads(target.read_text().splitlines()[0])["type"] == "header"  # written through
    fifo, got = tmp_path / "pipe", []
    os.mkfifo(fifo)
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    assert invoke("run", "--format", "json", "-o", str(fifo)).exit_code == 0  # no --force: nothing to overwrite
    reader.join(timeout=60)
    assert fifo.is_fifo() and got and got[0].startswith('{"type":"header"')
    result = invoke("run", "--format", "json", "-o", "-", "--no-timing")
    assert result.exit_code == 0 and result.stdout.startswith('{"type":"header"') and not (tmp_path / "-").exists()


def test_an_unwritable_output_is_one_line_and_leaves_no_file(tmp_path):

    if os.path.isdir("/proc/self"):  # writable to root by its permissions, but no file can be made there
        result = runner.invoke(app, ["run", "--format", "json", "-o", "/proc/x.jsonl"])
        assert result.exit_code == 1 and "cannot write /proc/x.jsonl" in result.output and "Traceback" not in result.output


def test_a_page_does_not_overwrite_pictures_without_force(tmp_path):
    picture = tmp_path / "page.canvas.png"
    picture.write_text("precious")
    result = runner.invoke(app, ["run", "--format", "markdown", "-o", str(tmp_path / "page.md")])
    assert result.exit_code == 2 and "page.canvas.png exists" in result.output and picture.read_text() == "precious"


def test_output_folder_must_exist(tmp_path):
    result = runner.invoke(app, ["run", "--model", "tiny", "-o", str(tmp_path / "missing" / "x.jsonl")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_corrupt_image_is_refused(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("this is not a png")
    result = runner.invoke(app, ["run", "--model", "tiny", "--image", str(bad)])
    assert result.exit_code == 2 and "is not an image" in result.output and "Traceback" not in result.output


def test_generation_traces_every_decode_step_and_folds_them(tmp_path):
    log = tmp_path / "gen.jsonl"
    assert invoke("run", "--model", "tiny", "--max-new-tokens", "5", "--format", "json", "-o", str(log), "--no-timing").exit_code == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    phases = [e for e in lines if e.get("kind") == "phase"]
    assert [p["path"] for p in phases] == ["prefill"] + ["decode"] * 4
    summary = lines[-1]
    assert len(summary["generated"]["ids"]) == 5 and summary["steps"] == 5
    out = invoke("render", str(log)).stdout
    assert "decode steps 1-4 (×4, the same shapes, one" in out  # the line may wrap after that
    assert "generated 5 tokens," in out


def test_no_values_traces_shapes_only_and_generates_the_same(tmp_path):
    logs = {flag: tmp_path / f"{flag or 'values'}.jsonl" for flag in ("", "--no-values")}
    for flag, log in logs.items():
        args = ["run", "--model", "tiny", "--max-new-tokens", "3", "--format", "json", "-o", str(log), "--no-timing"]
        assert invoke(*args, *([flag] if flag else [])).exit_code == 0
    runs = {flag: [json.loads(line) for line in log.read_text().splitlines()] for flag, log in logs.items()}

    def stats(lines):
        return sum("stats" in item for e in lines[1:-1] for item in e.get("outputs", []))
    assert stats(runs[""]) > 0 and stats(runs["--no-values"]) == 0
    assert runs[""][0]["values"] is True and runs["--no-values"][0]["values"] is False
    assert runs[""][-1]["generated"] == runs["--no-values"][-1]["generated"]  # the tracer changes nothing
    assert "(no value summaries)" in invoke("render", str(logs["--no-values"])).stdout


def meta_checkpoint(folder, state):
    """A Meta-layout tiny checkpoint of `state`, with the Llama 3 tokenizer that llama-models ships."""
    from checkpoints import write_meta_checkpoint
    from model import get_preset

    return write_meta_checkpoint(folder, get_preset("tiny"), state, with_vision_fields=True)


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    """A Meta-layout and a Hugging Face-layout checkpoint of the same random tiny weights."""
    from checkpoints import write_hf_checkpoint
    from model import build_model, get_preset

    args = get_preset("tiny")
    state = build_model(args, dtype=torch.float32, seed=3).state_dict()
    root = tmp_path_factory.mktemp("ckpt")
    meta = meta_checkpoint(root / "meta-tiny-instruct", state)
    hf = write_hf_checkpoint(root / "hf-tiny-instruct", args, state)
    return meta, hf, state


@pytest.mark.parametrize("damage, message", [
    (lambda text: "\n".join(text.splitlines()[:1000]) + "\n",
     "tokenizer.model holds 1256 tokens, special ones included, but the model's vocab_size is 128256: a tokenizer of another model"),
    (lambda text: "not base64 at all\n", "tokenizer.model is malformed: Incorrect padding; re-download it, or move it away"),
])
def test_a_checkpoint_tokenizer_that_does_not_fit_is_refused_before_the_run(tiny_checkpoints, tmp_path, damage, message):
    # A 1000-entry tokenizer used to run to the end and fail decoding the model's ids (KeyError).
    import shutil

    folder = shutil.copytree(tiny_checkpoints[0], tmp_path / "meta-tiny-instruct")
    path = folder / "tokenizer.model"
    path.write_text(damage(path.read_text()))
    result = runner.invoke(app, ["run", "--checkpoint", str(folder), "--max-new-tokens", "2", "-o", str(tmp_path / "a.jsonl")])
    assert result.exit_code == 2 and message in result.output and "internal error" not in result.output
    assert not (tmp_path / "a.jsonl").exists()


def test_a_folder_with_both_layouts_says_which_it_reads(tiny_checkpoints, tmp_path):
    import shutil

    meta, hf, _ = tiny_checkpoints
    folder = shutil.copytree(meta, tmp_path / "both-tiny-instruct")
    for file in hf.glob("*.*"):
        shutil.copy(file, folder / file.name)
    result = runner.invoke(app, ["run", "--checkpoint", str(folder), "-o", str(tmp_path / "a.jsonl")])
    assert result.exit_code == 0, result.output
    assert "note: the checkpoint folder holds Meta's layout and Hugging Face's: reading Meta's (params.json, consolidated*.pth)" in result.output


def test_checkpoints_of_both_layouts_generate_what_meta_generates(tiny_checkpoints, tmp_path):
    import copy

    import meta_reference as mr
    from model import ChatFormat, Message, get_preset, get_tokenizer
    from walkthroughs.inputs import load_image

    meta, hf, state = tiny_checkpoints
    generated = {}
    for folder in (meta, hf):
        log = tmp_path / f"{folder.name}.jsonl"
        result = invoke("run", "--checkpoint", str(folder), "--max-new-tokens", "16", "--dtype", "fp32", "--format", "json", "-o", str(log), "--no-timing")
        assert result.exit_code == 0
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        assert lines[0]["mode"] == "real" and lines[0]["model"]["preset"] == f"checkpoint {folder.name}"
        generated[folder.name] = lines[-1]["generated"]["ids"]
    assert generated["meta-tiny-instruct"] == generated["hf-tiny-instruct"]

    reference = mr.build_meta_model(get_preset("tiny"), dtype=torch.float32)
    reference.load_state_dict(state, strict=True)
    image = load_image(None, chunk_size=112).image
    inp = ChatFormat(get_tokenizer()).encode_dialog_prompt([Message("user", [image, "Describe this image in one sentence."])])
    with mr.meta_default_dtype(torch.float32):
        steps = list(mr.meta_generator(reference).generate([copy.deepcopy(inp)], temperature=0.0, max_gen_len=16))
    assert generated["meta-tiny-instruct"] == [r[0].token for r in steps]


def test_broken_checkpoints_give_one_line_errors(tiny_checkpoints, tmp_path):
    from checkpoints import write_malicious_pth

    meta, _, _ = tiny_checkpoints
    empty = tmp_path / "empty"
    empty.mkdir()
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "params.json").write_text((meta / "params.json").read_text())
    marker = tmp_path / "pwned"
    write_malicious_pth(evil / "consolidated.00.pth", marker)
    for folder, message in ((tmp_path / "nope", "does not exist"), (empty, "is empty"), (evil, "refused")):
        result = runner.invoke(app, ["run", "--checkpoint", str(folder)])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not marker.exists()


def test_a_nan_weight_is_named_where_it_first_shows_not_a_crash(tiny_checkpoints, tmp_path):
    _, _, state = tiny_checkpoints
    bad = dict(state)
    bad["text_model.layers.2.feed_forward.w1.weight"] = state["text_model.layers.2.feed_forward.w1.weight"].clone()
    bad["text_model.layers.2.feed_forward.w1.weight"][0, 0] = float("nan")  # the JSON log once refused the NaN logits
    folder = meta_checkpoint(tmp_path / "nan-tiny", bad)
    log = tmp_path / "nan.jsonl"
    result = invoke("run", "--checkpoint", str(folder), "--max-new-tokens", "2", "-o", str(log), "--no-timing")
    assert result.exit_code == 0, result.output
    assert load_log(log)[2]["top5"][0]["logit"] == "nan"
    result = invoke("render", str(log))
    assert "NaN/Inf first appear in stage text.self_attention" in result.output
    assert "text_model.layers.2.feed_forward.w1" in result.output


@pytest.mark.parametrize("owner, name, what", [(pathlib.Path, "read_text", "params.json"), (torch, "load", "consolidated.00.pth"),
                                               (pathlib.Path, "iterdir", "meta-tiny-instruct")])
def test_an_unreadable_checkpoint_says_permission_denied(tiny_checkpoints, monkeypatch, owner, name, what):
    meta, _, _ = tiny_checkpoints

    def denied(first, *args, **kwargs):  # as for a file (or the folder) this user may not read: the path comes first
        raise PermissionError(13, "Permission denied", str(first))

    monkeypatch.setattr(owner, name, denied)
    result = runner.invoke(app, ["run", "--checkpoint", str(meta)])
    assert result.exit_code == 2, result.output
    assert f"{what}: permission denied; give this user read access" in result.output and "re-download" not in result.output


def test_a_checkpoint_run_whose_context_cannot_fit_is_refused(tiny_checkpoints, monkeypatch):
    from walkthroughs import run as run_module

    meta, _, _ = tiny_checkpoints
    monkeypatch.setattr(run_module, "available_memory", lambda: 8 * 2**30)  # M = 131072: a 16 GiB causal mask
    result = runner.invoke(app, ["run", "--checkpoint", str(meta), "--max-seq-len", "131072"])
    assert result.exit_code == 2 and result.output.strip().endswith("is free: lower --max-seq-len"), result.output


def test_a_missing_tokenizer_file_is_a_one_line_error(monkeypatch):
    import model.tokenizer as tk

    def missing():
        raise tk.TokenizerError("the llama-models package is not installed; run: pip install llama-models==0.3.0")

    monkeypatch.setattr(tk, "default_model_path", missing)
    tk.get_tokenizer.cache_clear()
    try:
        result = runner.invoke(app, ["run", "--model", "tiny", "--max-new-tokens", "1"])
    finally:
        tk.get_tokenizer.cache_clear()
    assert result.exit_code == 2, result.output
    assert "pip install llama-models" in result.output and "internal error" not in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_a_failing_forward_still_writes_the_events_and_names_the_stage(tmp_path, monkeypatch):
    import model.vision_encoder as ve

    def broken_mask(*args, **kwargs):
        raise RuntimeError("simulated failure in the encoder mask")

    monkeypatch.setattr(ve, "build_encoder_attention_mask", broken_mask)
    log = tmp_path / "failed.jsonl"
    result = runner.invoke(app, ["run", "--model", "tiny", "--format", "json", "-o", str(log), "--no-timing"])
    assert result.exit_code == 1
    assert "failed in stage vision.encoder_mask" in result.output and "simulated failure" in result.output
    assert "Traceback" not in result.output
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["error"]["type"] == "RuntimeError"
    assert summary["error"]["stage"] == "vision.encoder_mask"
    stages = {e.get("stage") for e in lines[1:-1]}
    assert {"prompt", "image.canvas", "vision.patch_embed", "vision.pad8"} <= stages  # everything before the failure


def test_ctrl_c_leaves_no_partial_file(tmp_path):
    import signal

    out = tmp_path / "run.jsonl"
    # The child stops mid-trace (after the prefill) and says so; Ctrl-C lands there.
    child = (
        "import sys, time\n"
        "import model.generation as g\n"
        "original = g.select_next_token\n"
        "def slow(*a, **k):\n"
        "    print('in the trace', flush=True); time.sleep(60); return original(*a, **k)\n"
        "g.select_next_token = slow\n"
        "from walkthroughs.cli import app\n"
        "sys.argv = ['llama-trace'] + sys.argv[1:]\n"
        "app()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", child, "run", "--model", "tiny", "--format", "json", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "in the trace"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr.read()
    assert list(tmp_path.iterdir()) == []  # neither the log nor a temporary file


def test_a_page_that_cannot_be_written_leaves_no_picture_and_names_the_file(tmp_path):
    (tmp_path / "page.chunks.png").mkdir()  # a folder where a picture goes
    result = runner.invoke(app, ["run", "--model", "tiny", "--format", "markdown", "-o", str(tmp_path / "page.md"), "--force"])
    assert result.exit_code == 1 and f"cannot write {tmp_path / 'page.chunks.png'}: Is a directory" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["page.chunks.png"] and "Traceback" not in result.output


def test_a_terminal_that_cannot_encode_unicode_gets_question_marks_not_a_traceback():
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    proc = subprocess.run([sys.executable, "-m", "walkthroughs.cli", "run", "--model", "tiny", "--no-timing"],
                          capture_output=True, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr[-300:]
    assert proc.stdout.startswith(b"llama-trace tiny ? real mode, random weights ?")


def test_the_output_suffix_picks_the_format_when_none_is_given(tmp_path):
    log = tmp_path / "trace.jsonl"
    assert invoke("run", "--model", "tiny", "--no-timing", "-o", str(log)).exit_code == 0
    assert json.loads(log.read_text().splitlines()[0])["type"] == "header"  # a log, not the terminal table
    page = tmp_path / "page.md"
    assert invoke("render", str(log), "-o", str(page)).exit_code == 0
    assert page.read_text().startswith("#") and list(tmp_path.glob("page.*.png"))
    text = tmp_path / "summary.txt"
    assert invoke("render", str(log), "-o", str(text)).exit_code == 0 and text.read_text().startswith("llama-trace tiny")
    assert invoke("render", str(log), "--format", "terminal", "-o", str(tmp_path / "t.txt")).exit_code == 0
    assert (tmp_path / "t.txt").read_text().startswith("llama-trace tiny")  # a suffix no format claims: --format's


def test_the_quiz_wraps_long_lines_at_spaces_on_a_narrow_terminal(monkeypatch, capsys):
    from walkthroughs.cli import _wrapping_echo

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr("shutil.get_terminal_size", lambda *a: os.terminal_size((60, 24)))
    echo = _wrapping_echo()
    echo("  input  x: [4, P, W] = [4, 1600, 1280] " + "word " * 20)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 1 and all(len(line) <= 60 for line in lines)
    assert "[4, P, W] = [4, 1600, 1280]" in lines[0] and all(line.startswith("    ") for line in lines[1:])


def test_a_prompt_holding_rich_markup_is_shown_as_text_by_every_view(tmp_path):
    prompt = "What is [/] this [red]thing?"
    log = tmp_path / "markup.jsonl"
    assert invoke("run", "--model", "tiny", "--prompt", prompt, "--max-new-tokens", "1", "--format", "json", "-o", str(log)).exit_code == 0
    walkthrough = invoke("render", str(log), "--format", "walkthrough")
    diff = invoke("diff", str(log), str(log))
    for result in (walkthrough, diff):
        assert result.exit_code == 0 and prompt in result.stdout


def test_render_and_diff_refuse_an_output_named_like_a_log_or_being_a_log_they_read(tmp_path):
    log = tmp_path / "tiny.jsonl"
    assert invoke("run", "--model", "tiny", "--max-new-tokens", "1", "--format", "json", "-o", str(log)).exit_code == 0
    before = log.read_bytes()
    renamed = tmp_path / "tiny.txt"
    renamed.write_bytes(before)  # a log under another name
    for args in (["render", str(log), "-o", str(tmp_path / "view.jsonl")],
                 ["diff", str(log), str(log), "-o", str(log), "--force"],
                 ["render", str(renamed), "-o", str(renamed), "--force"],
                 ["diff", str(log), str(renamed), "-o", str(renamed), "--force"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "-o " in result.output, args
    assert log.read_bytes() == before and renamed.read_bytes() == before and not (tmp_path / "view.jsonl").exists()


def test_depth_is_refused_for_the_json_log(tmp_path):
    result = runner.invoke(app, ["run", "--model", "tiny", "--format", "json", "--depth", "3", "-o", str(tmp_path / "t.jsonl")])
    assert result.exit_code == 2 and "--depth" in result.output and not (tmp_path / "t.jsonl").exists()


def test_a_view_written_to_a_file_says_where(tmp_path):
    log = tmp_path / "tiny.jsonl"
    assert invoke("run", "--model", "tiny", "--max-new-tokens", "1", "--format", "json", "-o", str(log)).exit_code == 0
    view = tmp_path / "view.txt"
    assert invoke("render", str(log), "-o", str(view)).stdout == f"wrote {view}\n" and view.read_text().strip()


@pytest.mark.parametrize("args, message", [
    (["run", "--model", "tiny", "--format", "json", "-o", "j.md"], "-o j.md names a Markdown page but --format is json"),
    (["run", "--model", "tiny", "--format", "markdown", "-o", "p.jsonl"], "-o p.jsonl names a JSON log but --format is markdown"),
    (["render", "LOG", "--format", "walkthrough", "-o", "w.html"], "-o w.html names an HTML page but --format is walkthrough"),
    (["diff", "LOG", "LOG", "-o", "d.html"], "`llama-trace diff` does not write an HTML page; name the file .md or .txt"),
    (["render", "LOG", "-o", "v.jsonl"], "`llama-trace render` does not write a JSON log; name the file .md, .html or .txt"),
])
def test_an_output_suffix_that_contradicts_the_format_is_refused(tmp_path, monkeypatch, args, message):
    """A JSON log named .md, terminal text named .html: refused before anything runs, with
    what the command can write (diff -o d.html once wrote plain text into d.html)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "LOG").write_text("")
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.output.replace("\n", " ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LOG"]


def test_a_page_does_not_overwrite_a_prompt_file_beside_it_without_force(tmp_path, monkeypatch):
    """A page of a multi-line prompt writes PAGE.prompt.txt beside itself; a file already there
    (the user's notes) is refused as the pictures are, and the message lists what was written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "q.txt").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "p.prompt.txt").write_text("MY NOTES", encoding="utf-8")
    args = ["run", "--model", "tiny", "--prompt-file", "q.txt", "--no-timing", "-o", "p.md"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "p.prompt.txt exists" in result.output and "--force" in result.output
    assert (tmp_path / "p.prompt.txt").read_text(encoding="utf-8") == "MY NOTES" and not (tmp_path / "p.md").exists()
    result = runner.invoke(app, [*args, "--force"])
    assert result.exit_code == 0 and "wrote p.md and 5 files beside it (p.prompt.txt, p.canvas.png" in result.output


def test_diff_shows_a_log_name_with_control_characters_escaped(tmp_path):
    log = tmp_path / "b\x1b[31mred.jsonl"
    assert invoke("run", "--model", "tiny", "--no-timing", "-o", str(log)).exit_code == 0
    for extra in ([], ["-o", str(tmp_path / "d.md")]):
        result = runner.invoke(app, ["diff", str(log), str(log), *extra])
        text = result.output + ((tmp_path / "d.md").read_text(encoding="utf-8") if extra else "")
        assert result.exit_code == 0 and "\x1b" not in text and "b\\x1b[31mred.jsonl" in text
