import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(2)

from logs import logged  # noqa: E402  (tests/ is on sys.path, as for checkpoints.py)


@pytest.fixture(scope="session")
def tokenizer():
    from model import get_tokenizer

    return get_tokenizer()


@pytest.fixture(scope="session")
def tiny_log():
    """The tiny model's log (real values), shared by the tests that read logs; never changed in place."""
    return logged("tiny")


@pytest.fixture(scope="session")
def log_11b():
    """The 11B-Instruct's meta-mode log, shared the same way."""
    return logged("11b-instruct")
