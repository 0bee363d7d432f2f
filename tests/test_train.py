"""Training: the criterion swap, the guard, settings, checkpoints and offline behaviour."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from defectdet import losses
from defectdet.config import CONFIGS_DIR, load_yaml
from defectdet.errors import ConfigError, TrainingError
from defectdet.offline import setup_ultralytics
from defectdet.train import (
    CLS_LOSSES,
    ClsLoss,
    ClsLossCallback,
    NonFiniteLossGuard,
    check_threads,
    data_summary,
    install_cls_loss,
    load_settings,
    resolve_loss,
    split_settings,
    train,
)

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(model="yolo11n.yaml", epochs=1, imgsz=128, batch=8, workers=0, plots=False, device="cpu", seed=0)


def _model_and_batch(nc=4, seed=0):
    setup_ultralytics()
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel("yolo11n.yaml", nc=nc, verbose=False)
    model.args = get_cfg()
    model.train()
    batch = {
        "img": torch.rand(2, 3, 128, 128),
        "batch_idx": torch.tensor([0.0, 0.0, 1.0]),
        "cls": torch.tensor([[0.0], [2.0], [3.0]]),
        "bboxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.1], [0.5, 0.5, 0.4, 0.4]]),
    }
    return model, batch


def test_bce_swap_reproduces_ultralytics_loss_exactly():
    model, batch = _model_and_batch()
    preds = model(batch["img"])
    ref_total, ref_items = model.init_criterion()(preds, batch)
    ours = install_cls_loss(model, "bce")
    total, items = ours(preds, batch)
    assert torch.equal(total, ref_total)
    assert all(torch.equal(items[k], ref_items[k]) for k in ref_items)
    assert float(ref_items["cls_loss"]) > 0


@pytest.mark.parametrize("kind", ["focal", "qfl", "vfl"])
def test_swap_keeps_ultralytics_normalisation_and_gain(kind, monkeypatch):
    """cls loss = gain * sum(elementwise loss over anchors x classes) / max(sum of target scores, 1)."""
    model, batch = _model_and_batch()
    preds = model(batch["img"])
    seen = {}
    forward = ClsLoss.forward

    def spy(self, logits, targets):
        seen["logits"], seen["targets"] = logits.detach(), targets.detach()
        return forward(self, logits, targets)

    monkeypatch.setattr(ClsLoss, "forward", spy)
    crit = install_cls_loss(model, kind, gamma=2.0, alpha=0.25 if kind != "vfl" else 0.75)
    _, items = crit(preds, batch)
    x, t = seen["logits"], seen["targets"]
    assert t.max() > 0 and t.max() <= 1  # IoU-aligned soft targets reached the loss
    fn = {
        "focal": lambda: losses.sigmoid_focal_loss(x, t, alpha=0.25, gamma=2.0),
        "qfl": lambda: losses.quality_focal_loss(x, t, beta=2.0),
        "vfl": lambda: losses.varifocal_loss(x, t, alpha=0.75, gamma=2.0),
    }[kind]
    expected = fn().sum() / t.sum().clamp(min=1) * model.args.cls
    assert float(items["cls_loss"]) == pytest.approx(float(expected), rel=1e-4)


def test_guard_names_epoch_batch_and_causes():
    guard = NonFiniteLossGuard()
    trainer = SimpleNamespace(
        loss=torch.tensor(1.0),
        epoch=2,
        epochs=10,
        args=SimpleNamespace(lr0=0.01, cls=4.0, amp=False),
        loss_items={"cls_loss": torch.tensor(float("nan"))},
    )
    guard.on_epoch_start(trainer)
    guard.on_batch_end(trainer)  # finite: nothing happens
    trainer.loss = torch.tensor(float("inf"))
    with pytest.raises(
        TrainingError, match=r"epoch 3/10, batch 2 \(cls_loss=nan\).*lr0=0.01.*gamma.*cls=4.0"
    ):
        guard.on_batch_end(trainer)


def test_settings_split_and_errors():
    ours, theirs = split_settings({"cls_loss": "qfl", "gamma": 1.5, "epochs": 3, "imgsz": 128})
    assert ours == {"cls_loss": "qfl", "gamma": 1.5} and theirs == {"epochs": 3, "imgsz": 128}
    with pytest.raises(ConfigError, match=r"unknown training key\(s\): epoch \(did you mean epochs\?\)"):
        split_settings({"epoch": 3})
    with pytest.raises(ConfigError, match="cls_loss='hinge': expected one of bce, focal, qfl, vfl"):
        resolve_loss({"cls_loss": "hinge"}, {})
    with pytest.raises(ConfigError, match=r"alpha=1.5: expected null or a number in \[0, 1\]"):
        resolve_loss({"cls_loss": "focal", "alpha": 1.5}, {})
    args = {}
    loss = resolve_loss({"cls_loss": "focal", "alpha": None}, args)
    assert loss == {"cls_loss": "focal", "gamma": 2.0, "alpha": None, "cls": 4.0} and args["cls"] == 4.0
    args = {"cls": 0.7}
    assert resolve_loss({"cls_loss": "vfl"}, args)["cls"] == 0.7  # a user's gain wins


def test_presets_and_overrides(tmp_path):
    expected = {
        "bce": ("bce", None, None),
        "focal_mild": ("focal", 1.0, 0.5),
        "focal": ("focal", 2.0, 0.25),
        "focal_extreme": ("focal", 4.0, 0.1),
        "focal_balanced": ("focal", 0.0, 0.5),
        "qfl": ("qfl", 2.0, None),
        "vfl": ("vfl", 2.0, 0.75),
    }
    assert {p.stem for p in (CONFIGS_DIR / "train").glob("*.yaml")} == set(expected)
    for name, (kind, gamma, alpha) in expected.items():
        s = load_settings(name, ["epochs=3", "device=0,1"])
        assert (s["cls_loss"], s.get("gamma"), s.get("alpha")) == (kind, gamma, alpha)
        assert s["epochs"] == 3 and s["device"] == "0,1"
        assert resolve_loss({k: s[k] for k in ("cls_loss", "gamma", "alpha") if k in s}, {"cls": s["cls"]})
    bad = tmp_path / "bad.yaml"
    bad.write_text("cls_loss: focal\ngamma: [2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: malformed YAML"):
        load_settings(str(bad), [])
    with pytest.raises(ConfigError, match="nope: config file not found; presets: bce, focal"):
        load_settings("nope", [])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_settings(None, ["epochs"])


def test_callbacks_survive_ddp_pickling():
    """ultralytics' DDP launcher cloudpickles the trainer's callbacks into the worker process."""
    cloudpickle = pytest.importorskip("cloudpickle")
    cb = cloudpickle.loads(cloudpickle.dumps(ClsLossCallback("vfl", 2.0, 0.75)))
    model, batch = _model_and_batch()
    trainer = SimpleNamespace(model=model, ema=None, args=model.args)
    cb(trainer)
    assert isinstance(model.criterion.bce, ClsLoss) and model.criterion.bce.kind == "vfl"
    guard = cloudpickle.loads(cloudpickle.dumps(NonFiniteLossGuard()))
    assert guard.batch == 0


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from defectdet.data.synthetic import make_dataset

    return make_dataset(
        tmp_path_factory.mktemp("synth"), images=24, defect_rate=0.5, imgsz=128, seed=3, video_frames=0
    )


def _load_without_defectdet(ckpt: Path) -> dict:
    """Load a checkpoint with plain ultralytics in a process where `import defectdet` fails."""
    code = textwrap.dedent(f"""
        import json, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "defectdet" or name.startswith("defectdet."):
                    raise ImportError("defectdet is not installed here")
        sys.meta_path.insert(0, Block())
        from ultralytics import YOLO
        m = YOLO({str(ckpt)!r})
        out = m.predict(__import__("numpy").zeros((128, 128, 3), "uint8"), imgsz=128, verbose=False)
        print(json.dumps({{"cls": type(m.model).__name__, "names": m.names, "n": len(out)}}))
    """)
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(ckpt.parent)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _pickled_modules(ckpt: Path) -> set[str]:
    """Modules of every class/function the checkpoint's pickle references (torch.save: protocol 2,
    GLOBAL opcodes). Not a byte search: ultralytics also stores the git commit message as text."""
    import pickletools
    import zipfile

    with zipfile.ZipFile(ckpt) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    ops = list(pickletools.genops(data))
    assert not any(op.name == "STACK_GLOBAL" for op, _, _ in ops), "protocol >= 4 pickle: extend this reader"
    return {arg.split(" ")[0] for op, arg, _ in ops if op.name == "GLOBAL"}


@pytest.mark.parametrize("kind", CLS_LOSSES)
def test_one_epoch_per_loss_and_plain_ultralytics_loads_checkpoint(kind, tiny_data, tmp_path):
    run = train(data=str(tiny_data), cls_loss=kind, project=str(tmp_path), name=kind, **TINY)
    info = load_yaml(run / "defectdet.yaml")
    assert (
        info["cls_loss"] == kind and info["cls"] == {"bce": 0.5, "focal": 4.0, "qfl": 4.0, "vfl": 3.0}[kind]
    )
    assert (info["optimizer"], info["lr0"], info["nbs"]) == (
        "AdamW",
        0.003,
        8,
    )  # auto from a yaml: a step every batch
    best = run / "weights" / "best.pt"
    assert best.is_file() and (run / "weights" / "last.pt").is_file()
    modules = _pickled_modules(best)  # no defectdet class pickled into the checkpoint
    assert "ultralytics.nn.tasks" in modules and not any(m.split(".")[0] == "defectdet" for m in modules)
    loaded = _load_without_defectdet(best)
    assert loaded["cls"] == "DetectionModel" and loaded["n"] == 1
    assert list(loaded["names"].values()) == ["scratch", "spot", "crack", "dent"]


def test_threads_sets_the_cpu_training_threads(tiny_data, tmp_path):
    seen, before = [], torch.get_num_threads()
    try:
        run = train(
            callbacks={"on_train_epoch_start": [lambda t: seen.append(torch.get_num_threads())]},
            data=str(tiny_data),
            project=str(tmp_path),
            name="threads",
            threads=3,
            **TINY,
        )
    finally:
        torch.set_num_threads(before)
    assert seen == [3]  # not ultralytics' os.cpu_count() - 1
    assert load_yaml(run / "defectdet.yaml")["threads"] == 3  # recorded with the run
    for bad in (0, 1.5, "two", True):
        with pytest.raises(ConfigError, match=r"threads=.*: expected a whole number >= 1"):
            check_threads(bad)
    assert check_threads("auto") == check_threads(None) == os.cpu_count()  # every core by default


def test_non_finite_loss_stops_training_with_clear_error(tiny_data, tmp_path):
    def poison(trainer):  # a corrupted head makes the very first loss NaN
        from ultralytics.utils.torch_utils import unwrap_model

        unwrap_model(trainer.model).model[-1].cv3[0][2].bias.data.fill_(float("nan"))

    with pytest.raises(
        TrainingError, match=r"non-finite training loss at epoch 1/1, batch 1 .*likely causes"
    ):
        train(
            callbacks={"on_train_batch_start": [poison]},
            data=str(tiny_data),
            cls_loss="focal",
            project=str(tmp_path),
            name="nan",
            **TINY,
        )


def test_training_makes_no_network_connection(tiny_data, tmp_path):
    """The whole `defectdet train` command, with every socket connection attempt recorded and refused."""
    code = textwrap.dedent("""
        import json, socket, sys
        attempts = []
        def refuse(*a, **k):
            attempts.append(repr(a[1:] if a and isinstance(a[0], socket.socket) else a)[:120])
            raise OSError("network disabled by test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from defectdet.cli import main
        rc = main(sys.argv[1:])
        print("ATTEMPTS=" + json.dumps(attempts))
        sys.exit(rc)
    """)
    args = [f"{k}={v}" for k, v in TINY.items()] + [
        f"data={tiny_data}",
        f"project={tmp_path}",
        "name=net",
        "cls_loss=qfl",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    env["DEFECTDET_HOME"] = str(tmp_path / "home")  # a fresh config dir: font and settings made offline
    r = subprocess.run(
        [sys.executable, "-c", code, "train", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    line = [x for x in r.stdout.splitlines() if x.startswith("ATTEMPTS=")][-1]
    assert json.loads(line[len("ATTEMPTS=") :]) == []
    assert (tmp_path / "net" / "weights" / "best.pt").is_file()
    assert list((tmp_path / "home" / "ultralytics").rglob("Arial.ttf"))


def test_train_checks_the_dataset_first(tiny_data, tmp_path, capsys):
    import shutil

    from defectdet.errors import DataError

    data = tmp_path / "data"
    shutil.copytree(tiny_data.parent, data)
    label = sorted((data / "labels" / "train").glob("*.txt"))[0]
    label.write_text("0 0.5 0.5 0.2\n")  # 4 fields instead of 5
    with pytest.raises(DataError, match=r"dataset has errors.*strict=False to skip the 1 bad images"):
        train(data=str(data / "data.yaml"), project=str(tmp_path), name="strict", **TINY)
    run = train(data=str(data / "data.yaml"), strict=False, project=str(tmp_path), name="lenient", **TINY)
    out = capsys.readouterr().out
    assert f"{label.name}:1" in out and "strict=False: skipping 1 bad images" in out
    assert (run / "weights" / "best.pt").is_file()


def test_ddp_relaunch_file_carries_the_loss(tiny_data, tmp_path):
    """Multi-GPU training re-launches the trainer from a file ultralytics generates (the trainer class,
    args, model and callbacks cloudpickled). Run that very file: the worker must train with our loss."""
    from ultralytics.utils.dist import generate_ddp_file

    from defectdet.train import prepare
    from defectdet.trainer import DefectdetTrainer

    yolo, args, _ = prepare(
        data=str(tiny_data), cls_loss="vfl", sampling="defect", project=str(tmp_path), name="ddp", **TINY
    )
    trainer = DefectdetTrainer(
        overrides={**args, "model": "yolo11n.yaml", "mode": "train"}, _callbacks=yolo.callbacks
    )
    trainer.model = trainer.get_model(cfg="yolo11n.yaml", weights=None)
    file = generate_ddp_file(trainer)
    try:
        r = subprocess.run(
            [sys.executable, file],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
            env={**os.environ, "DEFECTDET_HOME": str(tmp_path / "home")},
        )
    finally:
        Path(file).unlink(missing_ok=True)
        Path(file).with_suffix(".pt").unlink(missing_ok=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "classification term = ClsLoss(kind=vfl, gamma=2.0, alpha=0.75)" in r.stdout + r.stderr
    assert "training data sampling=defect" in r.stdout + r.stderr  # the worker builds defectdet's sampler
    assert load_yaml(tmp_path / "ddp" / "defectdet.yaml")["cls_loss"] == "vfl"
    assert (tmp_path / "ddp" / "weights" / "best.pt").is_file()


def test_cls_loss_auto_takes_the_recommended_preset_with_its_gain(tiny_data, capsys):
    from defectdet.data.stats import dataset_stats, recommend_preset

    rec = recommend_preset(dataset_stats(str(tiny_data), imgsz=128))
    preset = load_yaml(CONFIGS_DIR / "train" / f"{rec['config']}.yaml")
    args = {"data": str(tiny_data), "imgsz": 128}
    loss = resolve_loss({"cls_loss": "auto"}, args)
    assert (loss["cls_loss"], loss["gamma"], loss["alpha"]) == (
        preset["cls_loss"],
        preset.get("gamma"),
        preset.get("alpha"),
    )
    assert loss["cls"] == preset["cls"] and f"cls_loss=auto -> {rec['config']}" in capsys.readouterr().out
    mine = resolve_loss(
        {"cls_loss": "auto", "gamma": 3.0}, {"data": str(tiny_data), "imgsz": 128, "cls": 0.9}
    )
    assert mine["gamma"] == 3.0 and mine["cls"] == 0.9  # the user's settings win over the preset's


def test_default_loss_is_auto_and_reduces_to_bce_on_balanced_data(tiny_data):
    """README, 'Quality benchmark': the recommended preset beat BCE on the rare split and equals BCE
    (gamma=0, alpha=0.5 at cls 1.0) on the balanced one: cls_loss=auto is the default."""
    from defectdet.train import DEFAULT_CLS_LOSS

    assert DEFAULT_CLS_LOSS == "auto"
    balanced = {
        "splits": {
            "train": {
                "anchors": {"negatives_per_positive": 100.0, "positive_fraction_in_defect_images": 0.01},
                "defect_free_fraction": 0.0,
            }
        }
    }
    assert resolve_loss({}, {}, balanced) == {"cls_loss": "focal", "gamma": 0.0, "alpha": 0.5, "cls": 1.0}
    with pytest.raises(ConfigError, match="cls_loss=auto needs data="):
        resolve_loss({}, {})
    assert resolve_loss({"cls_loss": "bce"}, {}) == {
        "cls_loss": "bce",
        "gamma": None,
        "alpha": None,
        "cls": 0.5,
    }


def test_importing_train_changes_no_process_state():
    """Setup of ultralytics is an explicit call (prepare(), DefectdetTrainer), not an import side effect."""
    code = (
        "import os, sys; import defectdet.train, defectdet.recipe, defectdet.ultralytics_adapter; "
        "print('ultralytics' in sys.modules, 'YOLO_OFFLINE' in os.environ)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["False", "False"]


def test_model_names_defectdets_own_yamls_and_keeps_everything_else_as_given(tmp_path, monkeypatch):
    from defectdet.config import config_file
    from defectdet.train import model_path

    assert model_path("defectdet-pico.yaml") == str(config_file("models", "defectdet-pico.yaml"))
    assert model_path("yolo11n.yaml") == "yolo11n.yaml"  # ultralytics' own name: resolved by ultralytics
    own = tmp_path / "defectdet-pico.yaml"
    own.write_text("nc: 1\n")
    monkeypatch.chdir(tmp_path)
    assert model_path("defectdet-pico.yaml") == "defectdet-pico.yaml"  # a user's file of that name wins
    assert model_path(tmp_path / "best.pt") == str(tmp_path / "best.pt")


@pytest.mark.parametrize(
    "model, pretrained, name, iterations, expected",
    [
        (
            "yolo11n.yaml",
            True,
            "auto",
            630,
            ("AdamW", 0.003, 0.9),
        ),  # short from-scratch run: defectdet's rate
        ("defectdet-pico.YML", False, "auto", 10000, ("AdamW", 0.003, 0.9)),  # the limit itself is short
        ("yolo11n.yaml", True, "auto", 10001, None),  # long run: ultralytics' rule
        ("yolo11n.yaml", True, "SGD", 630, None),  # the user's optimizer
        ("yolo11n.yaml", True, "AdamW", 630, None),
        ("best.pt", True, "auto", 630, None),  # fine-tuning a user's checkpoint: ultralytics' rule
        (
            "yolo11n.yaml",
            "weights/best.pt",
            "auto",
            630,
            None,
        ),  # yaml + pretrained weights file: not from scratch
    ],
)
def test_scratch_optimizer_replaces_only_autos_short_from_scratch_choice(
    model, pretrained, name, iterations, expected
):
    from defectdet.trainer import scratch_optimizer, trains_from_scratch

    args = SimpleNamespace(model=model, pretrained=pretrained)
    assert scratch_optimizer(name, iterations, trains_from_scratch(args)) == expected


@pytest.mark.parametrize(
    "overrides, expected",
    [
        # auto on a yaml: AdamW at SCRATCH_LR0, bias warm-up from zero as auto does, a step every batch (nbs =
        # batch)
        ({"batch": 16, "nbs": 64}, ("AdamW", 0.003, 0.0, 16)),
        (
            {"optimizer": "SGD", "lr0": 0.02, "warmup_bias_lr": 0.1},
            ("SGD", 0.02, 0.1, 64),
        ),  # the user's own, untouched
    ],
)
def test_trainer_builds_the_optimizer_and_records_it_in_args(tiny_data, tmp_path, overrides, expected):
    from defectdet.trainer import DefectdetTrainer

    trainer = DefectdetTrainer(
        overrides={
            "model": "yolo11n.yaml",
            "data": str(tiny_data),
            "mode": "train",
            "project": str(tmp_path),
            "name": "opt",
            "device": "cpu",
            **overrides,
        }
    )
    trainer.accumulate = 4  # what ultralytics computed from nbs=64 just before building the optimizer
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = trainer.build_optimizer(
        net,
        name=trainer.args.optimizer,
        lr=trainer.args.lr0,
        momentum=trainer.args.momentum,
        decay=5e-4,
        iterations=630,
    )
    assert (
        type(opt).__name__,
        opt.param_groups[0]["lr"],
        trainer.args.warmup_bias_lr,
        trainer.args.nbs,
    ) == expected
    assert (trainer.args.optimizer, trainer.args.lr0) == expected[:2]  # what checkpoints carry for resume
    assert trainer.accumulate == (1 if expected[0] == "AdamW" else 4)
    decayed = [g["weight_decay"] for g in opt.param_groups if g["weight_decay"]]
    assert decayed == [pytest.approx(trainer.args.weight_decay)]  # wd x batch x accumulate / nbs: unchanged


def test_the_run_file_records_the_data_facts_as_plain_numbers(tmp_path):
    """defectdet.yaml's data_stats: what cls_loss=auto and sampling=auto went by, YAML-safe."""
    import numpy as np

    from defectdet.artifact import RunInfo

    train = {
        "images": np.int64(40),
        "defect_free_fraction": np.float64(0.5),
        "anchors": {"negatives_per_positive": np.float64(199.0)},
    }
    stats = {"imgsz": np.int64(256), "splits": {"train": train}}
    facts = data_summary(stats)
    assert facts == {"imgsz": 256, "images": 40, "defect_free_fraction": 0.5, "negatives_per_positive": 199.0}
    assert data_summary(None) is None
    RunInfo(cls_loss="focal", data_stats=facts).save(tmp_path / "defectdet.yaml")
    assert RunInfo.load(tmp_path / "defectdet.yaml").data_stats == facts
