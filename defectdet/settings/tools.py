"""The options of the commands around the line — ``defectdet review``, ``compare``, ``report`` and
``checks`` — declared once; each command builds its argparse parser from its schema here."""

from __future__ import annotations

from . import Key, Range, Schema

REVIEW = Schema(
    "review",
    [
        Key(
            "run",
            None,
            "a run folder of defectdet inspect --review (or its review folder)",
            kind=str,
            positional=True,
        ),
        Key("bind", "127.0.0.1:8090", "host:port", kind=str),
        Key("token_env", None, "environment variable holding the token (required beyond loopback)", kind=str),
    ],
)

COMPARE = Schema(
    "compare",
    [
        Key(
            "run", None, "a run folder of defectdet inspect --shadow ... --review", kind=str, positional=True
        ),
        Key(
            "candidate",
            None,
            "the candidate model (model.bundle, .onnx or .engine), for reviewed frames the shadow did "
            "not see (default: the shadow's model file)",
            kind=str,
        ),
        Key(
            "backend",
            "auto",
            "the candidate's runtime: auto (by model suffix), onnxruntime or tensorrt",
            choices=("auto", "onnxruntime", "tensorrt"),
        ),
    ],
)

REPORT = Schema(
    "report",
    [
        Key(
            "events", None, "a run folder of defectdet inspect (or a folder of runs)", kind=str, required=True
        ),
        Key("since", None, "start of the shift, ISO 8601 (in --tz unless an offset is given)", kind=str),
        Key("until", None, "end of the shift (exclusive)", kind=str),
        Key(
            "tz",
            None,
            "zone of the hours and of naive --since/--until: local (default: this machine's), UTC, an IANA "
            "name (Europe/Berlin) or an offset (+02:00)",
            kind=str,
        ),
        Key("out", "report", "output folder", kind=str),
        Key("top", 8, "NG parts shown with a snapshot (most confident first)", range=Range(int, 0)),
        Key("no_charts", False, "no charts (no matplotlib needed)", kind=bool),
    ],
)

CHECKS = Schema(
    "checks",
    [
        Key(
            "model",
            None,
            "a model.bundle (or .onnx/.engine): say which file and backend inspect will run",
            kind=str,
        ),
        Key("source", None, "a camera or stream URI (as inspect --source): read one frame", kind=str),
        Key("out", "runs", "where inspect writes (free disk for snapshots)", kind=str),
        Key("json", False, "print the checks as JSON (for fleet tooling)", kind=bool),
        Key("strict", False, "exit 1 when any line is ✘", kind=bool),
    ],
)
