import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tokenizer():
    from model import get_tokenizer

    return get_tokenizer()


def logged(preset: str, prompt: str = "Describe this image in one sentence.", image=None) -> tuple:
    """(header, events, summary, image) of a run without timings, as a saved log loads back."""
    from tracer.log import build_lines, load_lines
    from walkthroughs.run import run

    result = run(image, prompt, preset=preset, timing=False)
    return (*load_lines(build_lines(result.trace, result.header, result.summary)), result.image)


@pytest.fixture(scope="session")
def tiny_log():
    """The tiny model's log (real values), shared by the tests that read logs; never changed in place."""
    return logged("tiny")


@pytest.fixture(scope="session")
def log_11b():
    """The 11B-Instruct's meta-mode log, shared the same way."""
    return logged("11b-instruct")
