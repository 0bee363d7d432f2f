"""bench/train_threads.py: a 1-round smoke run prints one row per thread setting with measured numbers."""

import re

import benchscripts


def test_train_threads_smoke(capsys):
    T = benchscripts.load("train_threads")
    assert T.main(["--threads", "auto", "1", "--rounds", "1", "--epochs", "2", "--images", "24"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\| (auto \(\d+\)|1) \| ([\d.]+) \| [\d.]+-[\d.]+ \| ([\d.]+)x \|$", out, re.M)
    assert [r[0].split()[0] for r in rows] == ["auto", "1"]
    assert all(float(r[1]) > 0 for r in rows) and rows[0][2] == "1.00"
