"""The option tables come from the schemas: every field has help, the docs page is the schemas' own table, and
configuration errors carry the schema's hints."""

import pytest

from llava_ckd.cli import build_parser, schema
from llava_ckd.config import ConfigError, StageConfig, validate
from llava_ckd.options import options
from scripts.options_doc import DOC, options_doc


@pytest.mark.parametrize("file", ["stage", "recipe"])
def test_every_field_has_help(file):
    rows = options(schema(file))
    assert len(rows) > 20
    assert [row.name for row in rows if not row.help] == []


def test_docs_options_page_is_the_schemas_table():
    assert DOC.read_text(encoding="utf-8") == options_doc(), "run: python scripts/options_doc.py"


def test_stage_help_ends_with_the_fields_and_their_defaults():
    subcommands = next(action for action in build_parser()._actions if action.dest == "command")
    help_text = subcommands.choices["train"].format_help()
    assert "fields of the stage file:" in help_text
    assert "  learning_rate: float = 2.0e-05\n      The schedule's peak learning rate (AdamW)." in help_text
    assert "  losses[].term: ce | response_kd | visual_kd | relation_kd = required" in help_text


def configuration_error(data: dict) -> str:
    with pytest.raises(ConfigError) as error:
        validate(StageConfig, data, "stage.yaml")
    return str(error.value)


def test_an_unknown_field_is_answered_with_the_closest_known_one():
    message = configuration_error({"kind": "sft", "model": {"preset": "tiny-student", "tokenizer": "t"},
                                   "data": {"conversations": "c.json", "max_lenght": 64}, "output_dir": "out",
                                   "learning_rat": 1e-3})
    assert "  learning_rat: Extra inputs are not permitted (did you mean learning_rate?)" in message
    assert "  data.max_lenght: Extra inputs are not permitted (did you mean data.max_length?)" in message


def test_a_missing_field_is_answered_with_its_help():
    message = configuration_error({"kind": "sft", "model": {"preset": "tiny-student", "tokenizer": "t"},
                                   "data": {"images": "img"}})
    assert ("  data.conversations: Field required (LLaVA conversation records: a .json list or a .jsonl file.)"
            in message)
    assert "  output_dir: Field required (Where the stage writes its checkpoints" in message
