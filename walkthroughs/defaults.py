"""What `llama-trace run` chooses when not told, shared by the command line (walkthroughs/cli.py),
the run itself (run.py), the renders and the command that repeats a run (regenerate.py). Kept
apart from run.py so that the command line can name them without importing torch."""

DEFAULT_PROMPT = "Describe this image in one sentence."
DEFAULT_TOP_P = 0.9  # the nucleus when sampling (`--top-p`), as in Meta's reference
DEFAULT_DEPTH = 2  # levels of the module tree shown under each stage (`--depth`)
DEFAULT_DTYPE = "bf16"  # `--dtype`: Meta's arithmetic
DEFAULT_DEVICE = "cpu"  # `--device` in real mode (meta mode runs on the meta device)
