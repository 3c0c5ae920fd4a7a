"""Runs as the tests read them: a traced run's log, as a saved log loads back."""

from tracer.log import build_lines, load_lines
from walkthroughs.run import run


def logged(preset: str, prompt: str = "Describe this image in one sentence.", image=None, **options) -> tuple:
    """(header, events, summary, image) of a run without timings (`options`: run's, e.g. max_new_tokens)."""
    result = run(image, prompt, preset=preset, timing=False, **options)
    return (*load_lines(build_lines(result.trace, result.header, result.summary)), result.image)
