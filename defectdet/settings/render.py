"""Write the files that come from the settings schema: ``configs/inspect.yaml`` (every key with its
default and comment) and ``docs/settings.md`` (a table per command).

    python -m defectdet.settings.render          # rewrite both in the checkout
    python -m defectdet.settings.render --check  # exit 1 when either differs from what it would write

``tests/test_settings_schema.py`` fails when the committed files differ from these functions' output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from . import ULTRALYTICS, Key, Schema
from .commands import OPTIONS
from .inspect import HEADER, INSPECT
from .train import TRAIN

ROOT = Path(__file__).resolve().parents[2]
COMMENT_COLUMN = 21  # where a key's comment starts in the YAML file (2 spaces after a longer line)


def yaml_value(value: Any) -> str:
    """A scalar as a YAML file writes it (null, true, 0.5, edge)."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text[:-3].strip() if text.endswith("...") else text


def render_yaml(schema: Schema = INSPECT, header: tuple = HEADER) -> str:
    """The commented YAML file of ``schema``: sections opened as their keys come, each key commented."""
    lines = [f"# {h}" for h in header] + [""]
    open_path: list[str] = []
    for key in schema:
        *parents, leaf = key.name.split(".")
        common = 0
        while common < min(len(parents), len(open_path)) and parents[common] == open_path[common]:
            common += 1
        if parents and common == 0 or (not parents and (open_path or key.gap)):
            lines.append("")  # a blank line before each top-level section and each group of top-level keys
        for depth in range(common, len(parents)):
            name = ".".join(parents[: depth + 1])
            lines.append(_commented("  " * depth + f"{parents[depth]}:", schema.sections.get(name, "")))
        open_path = parents
        literal = key.literal if key.literal is not None else yaml_value(key.default)
        lines.append(_commented("  " * len(parents) + f"{leaf}: {literal}", key.doc))
        lines += [" " * COMMENT_COLUMN + f"# {more}" for more in key.more]
    return "\n".join(lines) + "\n"


def _commented(text: str, comment: str) -> str:
    if not comment:
        return text
    pad = COMMENT_COLUMN - len(text) if len(text) < COMMENT_COLUMN else 2
    return f"{text}{' ' * pad}# {comment}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def _default(key: Key) -> str:
    if key.default is ULTRALYTICS:
        return "ultralytics'"
    return f"`{key.literal if key.literal is not None else yaml_value(key.default)}`"


def table(schema: Schema) -> list[str]:
    rows = ["| key | default | values | what it does |", "|---|---|---|---|"]
    for k in schema:
        doc = " ".join((k.doc, *k.more))
        rows.append(f"| `{k.name}` | {_default(k)} | {_cell(k.describe())} | {_cell(doc)} |")
    return rows


def _option_default(key: Key) -> str:
    if key.required or (key.positional and key.nargs is None):
        return "required"
    if key.kind is bool:
        return "off"
    if key.default is None:
        return "none"
    shown = " ".join(map(str, key.default)) if isinstance(key.default, (list, tuple)) else key.default
    return f"`{shown}`"


def _option_values(key: Key) -> str:
    if key.kind is bool:
        return "a switch"
    if key.range is not None or key.expected or key.choices:
        return key.describe().replace("null or ", "")
    return {int: "an integer", float: "a number"}.get(key.kind, "a string")


def option_table(schema: Schema) -> list[str]:
    """The table of a command's options: option, default, values, what it does."""
    rows = ["| option | default | values | what it does |", "|---|---|---|---|"]
    for k in schema:
        doc = " ".join((k.doc, *k.more))
        rows.append(f"| `{k.option}` | {_option_default(k)} | {_cell(_option_values(k))} | {_cell(doc)} |")
    return rows


# a line or two under a command's heading, where its options need one
OPTION_NOTES = {
    "val": "`key=value` overrides (`target_escape=0.01`) set the same options by their key (the option's "
    "name with `_` for `-`), checked the same way.",
    "quantize": "The accuracy gate's options are `defectdet gate`'s.",
    "build-engine": "The bundle options apply to `defectdet build-engine model.bundle`.",
}


def render_options() -> list[str]:
    out = []
    for name, schema in OPTIONS.items():
        out += [f"## defectdet {name}", ""]
        if name in OPTION_NOTES:
            out += [OPTION_NOTES[name], ""]
        out += [*option_table(schema), ""]
    return out


def render_markdown() -> str:
    """docs/settings.md: every key of every command in the schema."""
    out = [
        "# Settings reference",
        "",
        "<!-- Written by `python -m defectdet.settings.render` from defectdet/settings/: edit the schema, "
        "not this page. -->",
        "",
        "Every key is declared once, in `defectdet/settings/`, with its default, what values it takes and",
        "what it does; this page and `configs/inspect.yaml` are written from there, and a test fails when a",
        "command accepts a key the schema does not declare, or the schema declares one no command accepts.",
        "A bad value is one line naming the key and what was expected (`snapshots.quota_mb='abc': expected",
        "a number >= 0`), and the command exits 2.",
        "",
        "## defectdet inspect",
        "",
        "Layers, later winning: these defaults, `configs/inspect.yaml` (or `--config FILE`), `key=value`",
        "overrides (dotted for nested keys: `snapshots.quota_mb=100`), then the flags (`--model`,",
        '`--source`, `--out`, ...). Keys whose values read "see the description" are checked where they',
        "are used.",
        "",
        *table(INSPECT),
        "",
        "## defectdet train",
        "",
        "`defectdet train [--config PRESET_OR_FILE] key=value ...`: every ultralytics training argument,",
        "plus the keys below. For the ultralytics keys listed, defectdet checks the value before training",
        "starts (the default is ultralytics' own unless stated); the loss and recipe keys are explained in",
        "[training and the recipe](training.md).",
        "",
        *table(TRAIN),
        "",
        "# Command-line options",
        "",
        "Every other command's options, each declared once in `defectdet/settings/` and its `--help` built",
        "from there. A bad number or choice is one line naming the option (`--calib-images=0: expected an",
        "integer >= 1`) and exit status 2.",
        "",
        *render_options(),
    ]
    return "\n".join(out) + "\n"


TARGETS = {"configs/inspect.yaml": render_yaml, "docs/settings.md": render_markdown}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m defectdet.settings.render", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when a file differs")
    ap.add_argument("--root", default=str(ROOT), help="the checkout to write into (default: this one)")
    a = ap.parse_args(argv)
    stale = []
    for rel, render in TARGETS.items():
        path, text = Path(a.root) / rel, render()
        if path.is_file() and path.read_text() == text:
            continue
        stale.append(rel)
        if not a.check:
            path.write_text(text)
    verb = "differs from the schema" if a.check else "written"
    for rel in stale:
        print(f"{rel}: {verb}")
    return 1 if a.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
