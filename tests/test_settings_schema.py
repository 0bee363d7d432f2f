"""The settings schema (defectdet/settings): every key a command accepts is declared there once, and
the commands, configs/inspect.yaml, docs/settings.md and the defaults the docs state agree with it."""

import re
from pathlib import Path

import pytest
import yaml

from defectdet.errors import ConfigError
from defectdet.settings import ULTRALYTICS, Key, Range, Schema, flat_names
from defectdet.settings import render as R
from defectdet.settings.commands import OPTIONS
from defectdet.settings.inspect import INSPECT
from defectdet.settings.train import TRAIN

ROOT = Path(__file__).resolve().parents[1]


def _documented(page: str, heading: str) -> list[str]:
    """The keys of the table under ``## heading`` in docs/<page>."""
    text = (ROOT / "docs" / page).read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", text, re.M)


# ------------------------------------------------------------------ defectdet inspect
def test_inspect_accepts_exactly_the_declared_keys_with_their_defaults():
    from defectdet.station.inspect_cli import DEFAULTS

    assert sorted(flat_names(DEFAULTS)) == sorted(INSPECT.names())  # accepted but undeclared, or the reverse
    assert DEFAULTS == INSPECT.defaults()


def test_inspect_ranges_come_from_the_schema():
    from defectdet.station import settings as S

    assert S.RANGES == INSPECT.ranges() and S.Range is Range
    numeric = [
        k.name for k in INSPECT if isinstance(k.default, (int, float)) and not isinstance(k.default, bool)
    ]
    unchecked = set(numeric) - set(S.RANGES) - set(S.DETECTOR_KEYS)
    assert not unchecked, f"declare a range for {sorted(unchecked)} in defectdet/settings/inspect.py"


def test_inspect_flags_are_schema_keys_with_the_schemas_choices():
    """Each ``defectdet inspect --flag`` sets the schema key of its name (--show and --serve: display.show and
    the page), with the schema's choices, so --help and the settings reference cannot drift apart."""
    from defectdet.station.inspect_cli import _parser

    special = {
        "config": None,
        "show": "display.show",
        "serve": "page.bind",
        "help": None,
        "overrides": None,
        "review": "review.enabled",
        "shadow": "shadow.model",
    }
    for action in _parser()._actions:
        key = special.get(action.dest, action.dest)
        if key is None:
            continue
        assert key in INSPECT.names(), f"--{action.dest.replace('_', '-')} sets no declared key"
        if action.choices:
            assert tuple(action.choices) == INSPECT[key].choices, action.dest


def test_the_registrys_number_reads_are_declared_ranges_of_the_same_kind():
    """A builder's ``s.number("key", int)`` reads a key the schema declares, with a range of that kind
    (so the value it reads was already checked and typed by the merged config's check)."""
    import ast

    from defectdet.station import registry

    tree = ast.parse(Path(registry.__file__).read_text())
    section_of = {
        c.args[2].id: c.args[0].value
        for c in ast.walk(tree)
        if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "SinkEntry"
    }
    reads = 0
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in section_of):
        for c in ast.walk(fn):
            if isinstance(c, ast.Call) and getattr(c.func, "attr", "") == "number":
                key = f"{section_of[fn.name]}.{c.args[0].value}"
                kind = c.args[1].id if len(c.args) > 1 else "float"
                assert key in INSPECT.ranges(), f"{key}: read as a number by the registry, no range declared"
                assert INSPECT[key].range.kind.__name__ == kind, f"{key}: read as {kind}"
                reads += 1
    assert reads >= 20


def test_the_yaml_file_is_the_one_the_schema_writes():
    text = (ROOT / "configs" / "inspect.yaml").read_text()
    assert text == R.render_yaml(), "run: python -m defectdet.settings.render"
    assert yaml.safe_load(text) == INSPECT.defaults()  # every key, its default, as YAML reads it back
    assert all(k.doc for k in INSPECT), "every key has its one-line doc"


def test_settings_page_is_the_one_the_schema_writes_and_lists_every_key():
    assert (ROOT / "docs" / "settings.md").read_text() == R.render_markdown(), (
        "run: python -m defectdet.settings.render"
    )
    assert _documented("settings.md", "defectdet inspect") == INSPECT.names()
    assert _documented("settings.md", "defectdet train") == TRAIN.names()


def test_render_check_mode_reports_a_stale_file(tmp_path, capsys):
    (tmp_path / "configs").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "configs" / "inspect.yaml").write_text("old\n")
    assert R.main(["--check", "--root", str(tmp_path)]) == 1
    assert "configs/inspect.yaml: differs from the schema" in capsys.readouterr().out
    assert R.main(["--root", str(tmp_path)]) == 0 and R.main(["--check", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "configs" / "inspect.yaml").read_text() == R.render_yaml()


# ------------------------------------------------------------------ defectdet train
def test_train_accepts_exactly_the_declared_defectdet_keys_with_their_defaults():
    import defectdet.train as T
    from defectdet import losses, sampling
    from defectdet.data import crops
    from defectdet.recipe import RECIPE_DEFAULTS
    from defectdet.settings.train import DEFECTDET_KEYS, ULTRALYTICS_KEYS

    assert sorted(k.name for k in DEFECTDET_KEYS) == sorted(T.DEFECTDET_KEYS)
    assert {k: TRAIN[k].default for k in RECIPE_DEFAULTS} == RECIPE_DEFAULTS
    assert {k: TRAIN[k].default for k in T.DEFAULTS} == T.DEFAULTS
    assert TRAIN["cls_loss"].default == T.DEFAULT_CLS_LOSS
    assert TRAIN["cls_loss"].choices == ("auto", *losses.CLS_LOSSES)
    assert TRAIN["sampling"].choices == ("auto", *sampling.SAMPLING_MODES)
    assert TRAIN["crop"].choices == ("auto", *crops.CROP_MODES)
    assert TRAIN["defect_fraction"].default == sampling.DEFAULT_DEFECT_FRACTION
    assert TRAIN["strict"].default is True and TRAIN["threads"].default is None
    ul = [k.name for k in ULTRALYTICS_KEYS]
    assert not set(ul) & set(T.DEFECTDET_KEYS)
    pytest.importorskip("ultralytics")
    from defectdet.offline import setup_ultralytics
    from defectdet.ultralytics_adapter import default_cfg_keys

    setup_ultralytics()
    missing = set(ul) - set(default_cfg_keys())
    assert not missing, f"not ultralytics training arguments: {sorted(missing)}"


def test_train_help_names_every_defectdet_key(capsys):
    pytest.importorskip("torch")
    import defectdet.train as T

    with pytest.raises(SystemExit):
        T.cli(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    undocumented = [k for k in T.DEFECTDET_KEYS if k not in text]
    assert not undocumented, f"defectdet train --help does not name {undocumented}"


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("epochs", 0, "an integer >= 1"),
        ("imgsz", -5, "an integer >= 32 (pixels, a multiple of 32)"),
        ("batch", 0, "a whole number >= 1, -1 (auto)"),
        ("batch", 1.5, "a whole number >= 1, -1 (auto) or a GPU"),
        ("workers", -1, "an integer >= 0"),
        ("seed", "x", "an integer >= 0"),
        ("lr0", 0, "a number > 0"),
        ("lr0", float("nan"), "a number > 0"),
        ("patience", True, "an integer >= 0"),
        ("epochs", 2.5, "an integer >= 1"),
    ],
)
def test_train_bad_numbers_are_one_line_errors_naming_the_key(key, value, expected):
    pytest.importorskip("torch")
    from defectdet.train import check_numbers

    with pytest.raises(ConfigError) as e:
        check_numbers({"data": "d.yaml", key: value})
    msg = str(e.value)
    assert msg.startswith(f"{key}={value!r}: expected {expected}") and "\n" not in msg


def test_train_good_numbers_pass_unchanged():
    ok = {
        "epochs": 3,
        "imgsz": 320,
        "batch": -1,
        "workers": 0,
        "seed": 7,
        "lr0": 0.003,
        "patience": 0,
        "hsv_h": "not ours",
    }
    assert TRAIN.check(ok) == ok and TRAIN.check({**ok, "batch": 0.5})["batch"] == 0.5
    assert TRAIN.check({"epochs": None}) == {"epochs": None}  # not given: ultralytics' default
    typed = TRAIN.check({"epochs": 10.0, "lr0": 1})  # what ultralytics gets: typed by the ranges
    assert typed == {"epochs": 10, "lr0": 1.0} and type(typed["epochs"]) is int


# ------------------------------------------------------------------ the schema type
def test_schema_refuses_a_key_declared_twice_or_a_doc_over_one_line():
    with pytest.raises(ValueError, match="declared twice: a"):
        Schema("x", [Key("a", 1, "one"), Key("a", 2, "two")])
    with pytest.raises(ValueError, match="one line"):
        Key("a", 1, "two\nlines")


def test_schema_checks_nested_and_flat_values_and_types_them():
    s = Schema(
        "x",
        [
            Key("n", 1, "n", range=Range(int, 1)),
            Key("sec.f", 0.5, "f", range=Range(float, 0, 1)),
            Key("free", None, "anything"),
        ],
    )
    assert s.check({"n": 3.0, "sec": {"f": 1}, "free": "x"}) == {"n": 3, "sec": {"f": 1.0}, "free": "x"}
    assert s.defaults() == {"n": 1, "sec": {"f": 0.5}, "free": None}
    with pytest.raises(ConfigError, match=r"^sec\.f=2: expected a number in \[0, 1\]$"):
        s.check({"sec": {"f": 2}})
    assert s["n"].describe() == "an integer >= 1"
    assert Key("k", None, "d", kind=str).describe() == "null or a string"


# ------------------------------------------------------------------ defaults the docs state
def _recipe_table_defaults() -> dict[str, str]:
    """training.md's recipe table: key -> the first value of "values (default first)"."""
    text = (ROOT / "docs" / "training.md").read_text()
    text = text.split("| key | values (default first) |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (.+?) \|", text, re.M)
    return {k: re.findall(r"`([^`]+)`|([^\s(`,…]+)", v)[0] for k, v in rows}


def test_the_recipe_tables_defaults_are_the_codes():
    found = _recipe_table_defaults()
    assert {"sampling", "crop", "paste", "rot90", "cls_loss"} <= set(found)
    for key, (code, word) in found.items():
        default = TRAIN[key].default
        stated = code or word
        if default is ULTRALYTICS or default is None:
            continue  # "every core", "auto (ultralytics' default)": said in words
        assert yaml.safe_load(stated) == default, f"training.md: {key} defaults to {stated}, code: {default}"


STATED = re.compile(
    r"defaults? (?:to |is )?`([a-z_.]+)(?:=|: )([^`]+)`"
    r"|`([a-z_.]+)(?:=|: )([^`]+)`(?:,| \(| is| by)? ?(?:the )?default"
)


def test_defaults_stated_in_the_docs_are_the_codes():
    """ "defaults to `key=value`", "`key: value`, the default", ... in any page or the README must be the
    schema's default."""
    schemas = {**{k.name: k for k in TRAIN}, **{k.name: k for k in INSPECT}}
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    checked, wrong = 0, []
    for page in pages:
        for m in STATED.finditer(page.read_text()):
            key, value = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            k = schemas.get(key)
            if k is None or k.default is ULTRALYTICS:
                continue
            checked += 1
            if value != k.literal and yaml.safe_load(value) != k.default:
                wrong.append(f"{page.name}: {key}={value} (code: {k.default!r})")
    assert not wrong, wrong
    assert checked >= 3  # the scan finds the statements it is meant to check


# ------------------------------------------------------------------ every other command's options
class _Parsed(Exception):
    """Raised by the patched parse_args: the parser a command built, caught before it runs."""

    def __init__(self, parser):
        self.parser = parser


def _parser_of(command: str, monkeypatch):
    """The argparse parser ``defectdet <command>`` builds (its subcommand's for ``data check``)."""
    import argparse
    import importlib

    from defectdet.cli import COMMANDS

    def stop(self, *a, **k):
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop)
    name, *sub = command.split()
    module = importlib.import_module(COMMANDS[name][0])
    with pytest.raises(_Parsed) as e:
        module.cli(sub)
    p = e.value.parser
    if sub and sub[0] != "harvest":  # data check|stats|convert: a subparser of defectdet data
        subparsers = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        p = subparsers.choices[sub[0]]
    return p


def test_every_command_is_in_the_schema():
    from defectdet.cli import COMMANDS

    covered = {name.split()[0] for name in OPTIONS} | {"train", "inspect"}
    assert covered == set(COMMANDS), f"no schema for {sorted(set(COMMANDS) - covered)}"


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_each_commands_parser_accepts_exactly_its_schemas_options(command, monkeypatch):
    """An option the parser accepts is a declared key (so it is documented) and every declared key is an
    option, with the same spelling, default, choices, nargs and required."""
    schema = OPTIONS[command]
    actions = {
        a.dest: a for a in _parser_of(command, monkeypatch)._actions if a.dest not in ("help", "overrides")
    }
    assert sorted(actions) == sorted(schema.names()), "accepted but undeclared, or declared but not accepted"
    for key in schema:
        a = actions[key.name]
        assert (a.option_strings or [a.dest]) == [key.option], key.name
        assert a.default == key.default, f"{key.option}: parser default {a.default!r}, schema {key.default!r}"
        required = key.required or (key.positional and key.nargs is None)  # argparse's rule for positionals
        assert a.required == required and (key.kind is bool or a.nargs == key.nargs), key.name
        if key.choices:
            assert a.metavar == "{" + ",".join(key.choices) + "}", key.name
            assert [a.type(c) for c in key.choices] == list(key.choices)
        assert key.doc in a.help.replace("%%", "%"), key.name


def test_the_settings_page_lists_every_commands_options():
    for command, schema in OPTIONS.items():
        assert _documented("settings.md", f"defectdet {command}") == [k.option for k in schema], command


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["quantize", "--model", "m.onnx", "--data", "d.yaml", "--calib-images", "0"],
            "--calib-images=0: expected an integer >= 1",
        ),
        (
            ["gate", "--fp32", "a", "--int8", "b", "--data", "d", "--max-drop", "x"],
            "--max-drop='x': expected a number >= 0 (percentage points)",
        ),
        (["build-engine", "--workspace", "-1"], "--workspace=-1: expected an integer >= 1"),
        (["export", "--model", "m.pt", "--input", "int4"], "--input int4: expected one of float32, uint8"),
        (
            ["val", "--model", "m.pt", "--data", "d.yaml", "target_escape=2"],
            "target_escape=2: expected a number in [0, 1) (an escape rate)",
        ),
        (
            ["val", "--model", "m.pt", "--data", "d.yaml", "max_images=0.5"],
            "max_images=0.5: expected an integer >= 1",
        ),
        (["report", "--events", "x", "--top", "-1"], "--top=-1: expected an integer >= 0"),
        (["data", "check", "d.yaml", "--imgsz", "0"], "--imgsz=0: expected an integer >= 1 (pixels)"),
        (["synth", "--out", "x", "--images", "1"], "--images=1: expected an integer >= 2"),
    ],
)
def test_a_bad_option_is_one_line_naming_it(argv, message, capsys):
    from defectdet.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


def test_help_is_built_from_the_schema_and_lists_the_exit_statuses(capsys):
    from defectdet.cli import main

    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    out = capsys.readouterr().out
    assert "calibration images (default 500)" in out and "accuracy gate:" in out
    assert "exit status:" in out and "  2  " in out


@pytest.mark.parametrize("command", ["data", *sorted(OPTIONS), "train"])
def test_every_commands_help_lists_its_exit_statuses(command, capsys):
    from defectdet.cli import main

    if command == "train":
        pytest.importorskip("torch")
    with pytest.raises(SystemExit) as e:
        main([*command.split(), "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "exit status:" in out and "\n  2  " in out, command


def test_train_help_lists_every_key_with_the_schemas_default(capsys, monkeypatch):
    pytest.importorskip("torch")
    import defectdet.train as T

    with pytest.raises(SystemExit):
        T.cli(["--help"])
    out = capsys.readouterr().out
    for key in TRAIN:
        default = "ultralytics'" if key.default is ULTRALYTICS else R.yaml_value(key.default)
        assert f"  {key.name}={default} " in out, key.name
    actions = {a.dest for a in _parser_of("train", monkeypatch)._actions}
    assert actions == {"help", "config", "overrides"}  # every other setting is a key=value of the schema


def test_the_commands_own_constants_are_the_schemas():
    from defectdet import demo, metrics, part_rule
    from defectdet.artifact.sidecar import TRT86_MAX_OPSET
    from defectdet.settings.data import DATA_CONVERT
    from defectdet.settings.demo import DEMO
    from defectdet.settings.export import EXPORT, GATE, PACKAGE, QUANTIZE
    from defectdet.settings.val import VAL

    assert EXPORT["opset"].default == TRT86_MAX_OPSET
    assert VAL["escape_rule"].choices == GATE["escape_rule"].choices == metrics.ESCAPE_RULES
    assert VAL["threshold_rule"].choices == part_rule.THRESHOLD_RULES
    assert PACKAGE["method"].choices == QUANTIZE["method"].choices
    assert demo.DEMO == {k.name: k.default for k in DEMO if k.name != "out"}
    assert DEMO["quant_method"].choices == QUANTIZE["method"].choices
    assert DATA_CONVERT["fmt"].choices == DATA_CONVERT["to"].choices[1:] + ("yolo",)
    pytest.importorskip("onnx")
    from defectdet.export.gate import Limits
    from defectdet.export.quantize import METHODS, TARGETS

    d = Limits()
    assert (d.max_drop, d.max_class_drop, d.max_escape_rise, d.max_overkill_rise, d.confidence) == tuple(
        GATE[k].default
        for k in ("max_drop", "max_class_drop", "max_escape_rise", "max_overkill_rise", "gate_confidence")
    )
    assert METHODS == QUANTIZE["method"].choices and TARGETS == QUANTIZE["target"].choices


OPTION_STATED = re.compile(r"`(--[a-z0-9-]+)[ =]([^`\s]+)`(?:,| \(| is| stays)? ?(?:the )?default")


def test_option_defaults_stated_in_the_docs_are_the_codes():
    """ "`--input float32` stays the default" in any page or the README: some command's default for it."""
    defaults: dict[str, set] = {}
    for schema in OPTIONS.values():
        for k in schema:
            defaults.setdefault(k.option, set()).add(str(k.default))
    checked, wrong = 0, []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for option, value in OPTION_STATED.findall(page.read_text()):
            if option in defaults:
                checked += 1
                if value not in defaults[option]:
                    wrong.append(f"{page.name}: {option} {value} (code: {sorted(defaults[option])})")
    assert not wrong, wrong
    assert checked >= 1


def test_range_ends_and_notes():
    r = Range(float, 0, 1, open_low=True, open_high=True, note="a share")
    assert r.describe() == "a number in (0, 1) (a share)" and r.check("k", 0.5) == 0.5
    for bad in (0, 1, True, "0.5", float("nan")):
        with pytest.raises(ConfigError, match=r"^k=.*: expected a number in \(0, 1\) \(a share\)$"):
            r.check("k", bad)
    assert Range(int, None).check("n", 3.0) == 3 and Range(int, None).describe() == "an integer"
    np = pytest.importorskip("numpy")
    assert (
        Range(float, 0, 1).check("c", np.float32(0.5)) == 0.5 and Range(int, 1).check("m", np.int64(2)) == 2
    )
