"""The committed example pages: regenerate with `python -m walkthroughs.examples_build`.

A test renders them again and fails on any difference, so the pages always match the code.
"""

from __future__ import annotations

from pathlib import Path

from .markdown import render_markdown, write_files
from .defaults import DEFAULT_PROMPT
from .run import run

EXAMPLES = Path(__file__).with_name("examples")
PRESETS = ("11b-instruct", "90b-instruct")


def example_files(preset: str) -> dict[Path, object]:
    from tracer.log import build_lines, load_lines

    result = run(None, DEFAULT_PROMPT, preset=preset, timing=False)
    header, events, summary = load_lines(build_lines(result.trace, result.header, result.summary))
    page = EXAMPLES / f"{preset}.md"
    as_typed = str(page.relative_to(EXAMPLES.parents[1]))  # the command runs from the project root
    return render_markdown(header, events, summary, page, image=result.image, regenerate_as=("markdown", as_typed))


def main() -> None:
    EXAMPLES.mkdir(exist_ok=True)
    for preset in PRESETS:
        files = example_files(preset)
        write_files(files)
        print(f"wrote {', '.join(p.name for p in files)}")


if __name__ == "__main__":
    main()
