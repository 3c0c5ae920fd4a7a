"""What a log's header says about the run behind it: where its weights came from, and the labels
the views show for that."""

from __future__ import annotations

RANDOM_TEXT = " (random weights: the text means nothing)"  # after generated text
CHECKPOINT_PRESET = "checkpoint "  # a run from a checkpoint names its model this, then the folder's name


def from_checkpoint(header: dict) -> bool:
    """Whether the run loaded a checkpoint (a log from before the path was recorded: by its preset)."""
    model = header.get("model", {})
    return "checkpoint" in model or str(model.get("preset", "")).startswith(CHECKPOINT_PRESET)


def random_weights(header: dict) -> bool:
    """A real-mode run without a checkpoint: tiny, or 11b/90b with --mode real, on seeded random weights."""
    return header.get("mode") == "real" and not from_checkpoint(header)


def values_summarised(header: dict) -> bool:
    """Whether the run's events carry value summaries: a real-mode run without --no-values."""
    return header.get("mode") == "real" and header.get("values") is not False


def mode_label(header: dict) -> str:
    """"meta mode", "real mode" (a checkpoint's weights) or "real mode, random weights"."""
    return f"{header.get('mode')} mode" + (", random weights" if random_weights(header) else "")
