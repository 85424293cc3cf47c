"""A schema's options as rows (dotted name, type, default, help), for `--help`, the option tables in the docs
and the hints in configuration errors: the help text lives once, on the fields."""

from __future__ import annotations

import difflib
import enum
import re
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, TypeAdapter


@dataclass(frozen=True)
class Option:
    name: str
    type: str
    default: str
    help: str


def _alternatives(annotation) -> list:
    """The types a field can hold, through Optional, unions and Annotated."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _alternatives(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [alternative for arg in typing.get_args(annotation) for alternative in _alternatives(arg)]
    return [annotation]


def _members(annotation) -> list:
    """The alternatives, with a tuple's items in place of the tuple."""
    return [member for alternative in _alternatives(annotation)
            for member in ([item for arg in typing.get_args(alternative) if arg is not Ellipsis
                            for item in _alternatives(arg)] if typing.get_origin(alternative) is tuple
                           else [alternative])]


def _models(annotation) -> list[type[BaseModel]]:
    return [member for member in _members(annotation) if isinstance(member, type) and issubclass(member, BaseModel)]


def type_text(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return type_text(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return " | ".join(str(value) for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        parts = [type_text(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
        return " | ".join(dict.fromkeys(parts))
    if origin is tuple:
        return f"list of {type_text(typing.get_args(annotation)[0])}"
    if annotation is Path:
        return "path"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " | ".join(str(member.value) for member in annotation)
    return getattr(annotation, "__name__", str(annotation))


def _default_text(field) -> str:
    if field.is_required():
        return "required"
    default = field.default
    if default is None or (isinstance(default, BaseModel) and not default.model_fields_set):
        return ""
    as_data = TypeAdapter(field.annotation).dump_python(default, mode="json", exclude_none=True)
    return yaml.safe_dump(as_data, default_flow_style=True, sort_keys=False, width=1000).strip().removesuffix("\n...")


def _selector(models: list[type[BaseModel]]) -> str | None:
    """The Literal field the models of a union are told apart by."""
    return next((name for name in models[0].model_fields
                 if all(name in model.model_fields
                        and typing.get_origin(model.model_fields[name].annotation) is typing.Literal
                        for model in models)), None)


def _selected_by(model: type[BaseModel], selector: str) -> str:
    return str(typing.get_args(model.model_fields[selector].annotation)[0])


def options(model: type[BaseModel], prefix: str = "", claimed: set | None = None) -> list[Option]:
    """Every field of `model`, and of the models inside it. Each model's fields are listed once, at the shallowest
    field that holds it; a union's models are told apart by the field that selects them (rows they all share are
    listed once)."""
    claimed = set() if claimed is None else claimed
    here = {member for field in model.model_fields.values() for member in _models(field.annotation)} - claimed
    claimed |= here
    rows = []
    for name, field in model.model_fields.items():
        if field.annotation is typing.Any:  # a field another schema checks (a recipe's stage fields)
            continue
        dotted = prefix + name
        models = _models(field.annotation)
        help_text = " ".join((field.description or (models[0].__doc__ if len(models) == 1 else "") or "").split())
        rows.append(Option(dotted, type_text(field.annotation), _default_text(field), help_text))
        inner = dotted + ("[]" if tuple in map(typing.get_origin, _alternatives(field.annotation)) else "") + "."
        expanded = [member for member in models if member in here
                     and not any(issubclass(other, member) for other in claimed - {member})]
        here -= set(expanded)
        if len(expanded) == 1:
            rows.extend(options(expanded[0], inner, claimed))
        elif expanded:
            rows.extend(_union_rows(expanded, inner, claimed))
    return rows


def _union_rows(models: list[type[BaseModel]], inner: str, claimed: set) -> list[Option]:
    selector = _selector(models)
    values = [_selected_by(member, selector) for member in models]
    per_member = {value: options(member, inner, claimed) for value, member in zip(values, models, strict=True)}
    shared = set.intersection(*({(row.name, row.type, row.help) for row in rows} for rows in per_member.values()))
    rows = [Option(inner + selector, " | ".join(values), "required",
                   f"The entry's kind; rows marked ({selector}: ...) belong to one kind.")]
    own = {value: [row for row in member_rows if row.name != inner + selector]
           for value, member_rows in per_member.items()}
    rows += [row for row in own[values[0]] if (row.name, row.type, row.help) in shared]
    for value, member_rows in own.items():
        rows += [Option(row.name, row.type, row.default, f"({selector}: {value}) {row.help}") for row in member_rows
                 if (row.name, row.type, row.help) not in shared]
    return rows


def markdown_table(rows: list[Option]) -> str:
    lines = ["| option | type | default | what it sets |", "| --- | --- | --- | --- |"]
    for row in rows:
        cells = (f"`{row.name}`", *(cell.replace("|", "\\|") for cell in (row.type, row.default, row.help)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def text_table(rows: list[Option], width: int = 100) -> str:
    """Rows for a terminal: the name and type on one line, the help indented below it."""
    lines = []
    for row in rows:
        default = f" = {row.default}" if row.default else ""
        lines.append(f"  {row.name}: {row.type}{default}")
        if row.help:
            lines.extend(textwrap.wrap(row.help, width, initial_indent=" " * 6, subsequent_indent=" " * 6))
    return "\n".join(lines)


def hint(rows: list[Option], location: str, kind: str) -> str:
    """What the schema says about an error at `location` (a dotted path): the field's help when a value is missing,
    the closest field names when a field is unknown."""
    name = re.sub(r"\.\d+(?=\.|$)", "[]", location)
    known = {row.name: row for row in rows}
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(name, list(known), n=2, cutoff=0.75)
        return f" (did you mean {' or '.join(close)}?)" if close else ""
    if kind == "missing" and name in known and known[name].help:
        return f" ({known[name].help})"
    return ""
