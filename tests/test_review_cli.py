"""The review loop's commands on a real ONNX model (the stand-in yolo11n of the page tests):
``inspect --review --shadow``, ``data harvest``, ``data check``, ``compare``, and their one-line errors."""

import json

import pytest
import yaml
from test_station_page import model  # noqa: F401 (the stand-in model fixture)

from defectdet.cli import main
from defectdet.station.sinks import read_events

SOURCE = "synthetic://?frames=36&seed=1&width=320&height=240"


def _inspect(onnx, out, *extra):
    args = [
        "inspect",
        "--model",
        str(onnx),
        "--source",
        SOURCE,
        "--out",
        str(out),
        "conf=0.5",
        "status_every=0",
    ]
    assert main([*args, *extra]) == 0
    return json.loads((out / "summary.json").read_text())


def bundled(onnx, out):
    """The stand-in model as a model bundle (the members ``defectdet package`` writes for FP32)."""
    from defectdet.artifact.bundle import write_bundle

    files = {"fp32/model.onnx": onnx, "fp32/model.json": onnx.with_suffix(".json")}
    return write_bundle(out, files, {"fp32": "fp32/model.onnx"}, "fp32", "fp32/model.json")


@pytest.mark.parametrize("candidate", ["onnx", "bundle"])
def test_inspect_review_shadow_harvest_compare(model, tmp_path, capsys, candidate):  # noqa: F811
    names = json.loads(model.with_suffix(".json").read_text())["names"]
    names = [names[k] for k in sorted(names, key=int)] if isinstance(names, dict) else names
    low = tmp_path / "low.yaml"
    low.write_text(yaml.safe_dump({"thresholds": {n: 0.3 for n in names}}))  # the candidate rejects more
    cand = model if candidate == "onnx" else bundled(model, tmp_path / "line" / "candidate.bundle").path
    plain = _inspect(model, tmp_path / "plain")
    run = tmp_path / "run"
    s = _inspect(
        model, run, "--review", "--shadow", str(cand), f"shadow.thresholds={low}", "review.audit_rate=0.2"
    )
    assert s["ng"] == plain["ng"] > 0, "the near-miss floor and the shadow change no decision"
    assert len(list(read_events(run / "events.jsonl"))) == s["ng"]
    review, shadow = s["sinks"]["review"], s["sinks"]["shadow"]
    assert review["written"] == sum(review["queued"].values()) > 0 and review["queued"]["ng"] > 0
    assert (
        shadow["shadowed"] == s["frames"] and shadow["skipped"] == 0 and shadow["agree"] < shadow["shadowed"]
    )
    label = "model.onnx:" if candidate == "onnx" else "candidate.bundle:"  # a bundle: its id
    assert shadow["live_only"] == 0 and shadow["candidate"].startswith(label)  # 0.3 < 0.5: it rejects more
    items = sorted((run / "review" / "items").glob("*.json"))
    metas = [json.loads(p.read_text()) for p in items]
    assert all(m["run_id"] == review["run_id"] and m["model"] == s["model"] for m in metas)
    # an operator's verdicts (the HTTP side is tested in test_review_loop.py): one defect, the rest good
    ng = next(m for m in metas if m["kind"] == "ng")
    lines = [
        {"item": m["id"], "verdict": "ok", "boxes": [], "who": "t", "ts": "x"} for m in metas if m is not ng
    ]
    box = ng["defects"][0]
    lines.append(
        {
            "item": ng["id"],
            "verdict": "defect",
            "who": "t",
            "ts": "x",
            "boxes": [{"class": "new_class", "xyxy": box["xyxy"], "origin": "drawn"}],
        }
    )
    (run / "review" / "review.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))

    data = tmp_path / "data"
    assert main(["data", "harvest", "--from", str(run), "--out", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"harvested {len(metas)} image(s)" in out and f"{len(metas) - 1} hard negative(s)" in out
    assert main(["data", "check", str(data / "data.yaml")]) == 0
    assert yaml.safe_load((data / "data.yaml").read_text())["names"][len(names)] == "new_class"
    capsys.readouterr()
    assert main(["data", "harvest", "--from", str(run), "--out", str(data)]) == 0
    assert "harvested 0 image(s)" in capsys.readouterr().out

    assert main(["compare", str(run)]) == 0
    report = json.loads((run / "compare.json").read_text())
    assert report["agreement"]["shadowed"] == s["frames"] and report["agreement"]["rate"] < 1
    assert report["reviewed"]["frames"] == len(metas) and report["verdict_sources"]["unseen"] == 0
    logged = report["reviewed"]["candidate"]
    (
        run / "shadow.jsonl"
    ).unlink()  # the candidate is run again on the saved frames, at the shadow's thresholds
    assert main(["compare", str(run)]) == 0
    again = json.loads((run / "compare.json").read_text())
    assert again["reviewed"]["candidate"] == logged and again["verdict_sources"]["rerun"] > 0
    assert main(["compare", str(run), "--candidate", str(cand)]) == 0  # named: a bundle is opened as well
    named = json.loads((run / "compare.json").read_text())
    assert named["reviewed"]["candidate"] == logged


def test_bad_inputs_are_one_line_errors(model, tmp_path, capsys):  # noqa: F811
    assert main(["compare", str(tmp_path / "nothing")]) == 2
    assert main(["data", "harvest", "--from", str(tmp_path), "--out", str(tmp_path / "d")]) == 2
    assert (
        main(
            [
                "inspect",
                "--model",
                str(model),
                "--source",
                SOURCE,
                "--out",
                str(tmp_path / "r"),
                "--shadow",
                str(tmp_path / "missing.onnx"),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "inspect",
                "--model",
                str(model),
                "--source",
                SOURCE,
                "--out",
                str(tmp_path / "r"),
                "--review",
                "review.near_band=2",
            ]
        )
        == 2
    )
    base = ["inspect", "--model", str(model), "--source", SOURCE, "--out", str(tmp_path / "r"), "--review"]
    assert main([*base, "review.image_format=gif"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and "not a run folder" in err[0] and "no review queue here" in err[1]
    assert (
        "missing.onnx" in err[2] and "review.near_band=2" in err[3] and "review.image_format='gif'" in err[4]
    )


def test_a_changed_shadow_bundle_is_refused_in_one_line(model, tmp_path, capsys):  # noqa: F811
    from test_bundle import rewrite

    bad = bundled(model, tmp_path / "candidate.bundle").path
    rewrite(bad, change={"fp32/model.json": b"{}"})
    out = tmp_path / "r"
    argv = ["inspect", "--model", str(model), "--source", SOURCE, "--out", str(out), "--shadow", str(bad)]
    assert main(argv) == 2 and not out.exists()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith(
        f"{bad}: fp32/model.json: sha256 differs from the manifest (changed after packaging)"
    ), err


def test_review_overhead_bench_smoke(model, tmp_path, capsys):  # noqa: F811
    import benchscripts

    bench = benchscripts.load("review_overhead")
    assert (
        bench.main(
            [
                "--model",
                str(model),
                "--frames",
                "12",
                "--rounds",
                "2",
                "--threads",
                "1",
                "--width",
                "320",
                "--height",
                "240",
                "--audit-rate",
                "0.5",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "out" / "review_overhead.json").read_text())
    assert (
        saved["table"] in out
        and saved["fps"]["on"] > 0
        and saved["fps"]["off"] > 0
        and saved["on_over_off"] > 0
    )
    assert saved["review_last_round"]["written"] > 0 and len(saved["rounds"]["on"]) == 2
