"""Writes docs/options.md from the schemas: every field of a stage file and of a recipe file, with its help.

    python scripts/options_doc.py            # rewrite docs/options.md
"""

from __future__ import annotations

from pathlib import Path

from llava_ckd.cli import schema
from llava_ckd.options import markdown_table, options

DOC = Path(__file__).parents[1] / "docs" / "options.md"


def options_doc() -> str:
    return (
        "# Options\n\n"
        "Every field of a stage file (`llava-ckd train STAGE.yaml`) and of a cascade recipe (`llava-ckd cascade`, "
        "`plan`, `study`), with its type, default and help. The same tables print with `llava-ckd options stage` "
        "and `llava-ckd options recipe`, and end `llava-ckd train --help` and `llava-ckd cascade --help`; "
        "`scripts/options_doc.py` writes this page from the schemas.\n\n"
        "## Stage file\n\n" + markdown_table(options(schema("stage"))) +
        "\n## Recipe file\n\n" + markdown_table(options(schema("recipe")))
    )


if __name__ == "__main__":
    DOC.write_text(options_doc(), encoding="utf-8")
    print(f"wrote {DOC}")
