import json
import shutil
import subprocess

import pytest

from kdlib.cli import main

from .conftest import ROOT

CH1 = str(ROOT / "chapters" / "01_hinton_kd.ipynb")


def error_line(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("kdbook: error: ")
    return err[0]


def test_unknown_profile(capsys):
    assert "unknown profile 'tpu'; valid choices: smoke, cpu, gpu" in error_line(capsys, ["run", CH1, "--profile", "tpu"])


def test_unknown_chapter(capsys):
    line = error_line(capsys, ["run", "chapters/99_nothing.ipynb", "--profile", "smoke"])
    assert "unknown chapter 'chapters/99_nothing.ipynb'; valid choices: chapters/01_hinton_kd.ipynb" in line
    assert "unknown chapter 'nope'; valid choices: hinton" in error_line(capsys, ["experiment", "nope", "--profile", "smoke"])


def test_parameter_of_the_wrong_type(tmp_path, capsys):
    nb = tmp_path / "p.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "code", "id": "parameters", "metadata": {"tags": ["parameters"]},
                                         "execution_count": None, "outputs": [],
                                         "source": "profile = 'cpu'\nseeds = 3\n"}],
                              "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                          "language": "python"}},
                              "nbformat": 4, "nbformat_minor": 5}))
    from kdlib import KDLibError
    from kdlib.cli import parse_parameters

    with pytest.raises(KDLibError, match="parameter 'seeds' of p.ipynb expects int, got 'three'"):
        parse_parameters(nb, [("seeds", "three")])
    with pytest.raises(KDLibError, match="unknown parameter 'sedes' for p.ipynb; valid choices: profile, seeds"):
        parse_parameters(nb, [("sedes", "3")])
    assert not list(tmp_path.glob("*.tmp*")) and not (ROOT / "_build" / "executed" / "smoke" / "p.ipynb").exists()


def test_existing_output_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "mine.ipynb"
    out.write_text("my work")
    line = error_line(capsys, ["run", CH1, "--profile", "smoke", "--output", str(out)])
    assert "exists; pass --force to overwrite it" in line and out.read_text() == "my work"


def test_unknown_plan_row(capsys):
    assert "unknown row 'nope'; valid choices: teacher" in error_line(
        capsys, ["experiment", "hinton", "--profile", "smoke", "--only", "nope"])


def test_results_lists_records(store, capsys):
    from kdlib.store import atomic_write_text

    rec = {"hash": "abc", "label": "x", "config": {"task": "sst2", "method": "kd", "hparams": {"T": 2}, "seed": 1},
           "best": {"epoch": 1.0, "step": 3, "train_loss": 0.1, "accuracy": 88.5}, "n_train": 10,
           "history": [], "dev_logits": [],
           "wall_time_s": 1.0, "hardware": {}}
    atomic_write_text(store / "results" / "cpu" / "hinton" / "abc.json", json.dumps(rec))
    assert main(["results", "--profile", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "hinton" in out and "accuracy 88.50" in out
    assert main(["results", "--profile", "gpu"]) == 0 and "no result records" in capsys.readouterr().out


def test_missing_lists_the_runs_without_a_record_and_trains_nothing(store, capsys):
    from kdlib.chapters import annealing, chapter_plan
    from kdlib.config import closure
    from kdlib.store import record_path

    plan = chapter_plan("annealing", "smoke")
    runs = {e.hash for exps in plan.values() for x in exps for e in closure(x)}
    assert main(["experiment", "annealing", "--profile", "smoke", "--missing"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"[kdbook] 0 of the plan's {len(runs)} runs are stored; {len(runs)} missing"
    stage_one = annealing.stage_one(plan[annealing.row("sst2", "Annealing KD")][0])
    assert any(line.startswith(stage_one.hash) and "stage I, seed 0" in line for line in out)  # a chain's first run
    teacher = plan[annealing.row("sst2", "teacher")][0]
    record_path(teacher).parent.mkdir(parents=True)
    record_path(teacher).write_text("{}")
    assert main(["experiment", "annealing", "--profile", "smoke", "--missing"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == (f"[kdbook] 1 of the plan's {len(runs)} runs are stored; {len(runs) - 1} missing; first, 1 "
                       "stored run is trained again for its weights (≈ 0.0 h)")  # the teacher's weights: not cached
    assert [line for line in out if line.startswith(teacher.hash)] == [
        f"{teacher.hash}  sst2  {teacher.label}, seed 0  stored, weights not cached: trained again first (≈ 0 min)"]
    assert sorted(p.name for p in (store / "results").rglob("*.json")) == [f"{teacher.hash}.json"]  # nothing made
    assert main(["experiment", "all", "--profile", "smoke", "--missing"]) == 0  # every chapter's plan at once
    assert "runs are stored" in capsys.readouterr().out


def test_missing_names_the_stored_runs_whose_weights_are_made_again_first(store, capsys, monkeypatch):
    """On a fresh machine a stored teacher has no weights: the runs that need them train it again first, which
    --missing says, with its cost, and warns where its record was made with other CPU kernels (stop 35)."""
    import torch

    from kdlib.chapters import annealing, chapter_plan
    from kdlib.runner import model_dir
    from kdlib.store import atomic_write_text, record_path

    plan = chapter_plan("annealing", "smoke")
    teacher = plan[annealing.row("sst2", "teacher")][0]
    atomic_write_text(record_path(teacher), json.dumps({"hash": teacher.hash, "config": {}, "wall_time_s": 120,
                                                        "hardware": {"cpu_capability": "NEON"}}))
    assert main(["experiment", "annealing", "--profile", "smoke", "--missing"]) == 0
    out = capsys.readouterr().out.splitlines()
    here = torch.backends.cpu.get_cpu_capability()
    line = [x for x in out if x.startswith(teacher.hash)]
    assert line == [f"{teacher.hash}  sst2  {teacher.label}, seed 0  stored, weights not cached: trained again first "
                    f"(≈ 2 min); its record was made with NEON kernels and this CPU has {here}: it may not be "
                    "reproduced to 0.0005"]
    assert out[-1].endswith("missing; first, 1 stored run is trained again for its weights (≈ 0.0 h)")
    # the same kernels on another maker's CPU (stop 36: the masked LM made on Intel was not reproduced on AMD)
    monkeypatch.setattr("kdlib.store.cpu_model", lambda: {"cpu_vendor": "AuthenticAMD"})
    for made_by, note in (("GenuineIntel", "; its record was made on a GenuineIntel CPU and this one is AuthenticAMD: "
                                           "it may not be reproduced to 0.0005"),
                          ("AuthenticAMD", ""), (None, "")):
        hw = {"cpu_capability": here, **({"cpu_vendor": made_by} if made_by else {})}
        atomic_write_text(record_path(teacher), json.dumps({"hash": teacher.hash, "config": {}, "wall_time_s": 120,
                                                            "hardware": hw}))
        assert main(["experiment", "annealing", "--profile", "smoke", "--missing"]) == 0
        line = [x for x in capsys.readouterr().out.splitlines() if x.startswith(teacher.hash)]
        assert line == [f"{teacher.hash}  sst2  {teacher.label}, seed 0  stored, weights not cached: trained again "
                        f"first (≈ 2 min){note}"], made_by
    atomic_write_text(model_dir(teacher) / "kdlib.json", "{}")  # its weights are cached: nothing to say
    assert main(["experiment", "annealing", "--profile", "smoke", "--missing"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert not any(x.startswith(teacher.hash) for x in out) and out[-1].startswith("[kdbook] 1 of the plan's")


def test_missing_estimates_each_run_from_the_stored_runs(store, capsys):
    from kdlib.chapters import annealing, chapter_plan
    from kdlib.cli import _estimates
    from kdlib.store import atomic_write_text, record_path

    def keep(exp, minutes, n_train):
        atomic_write_text(record_path(exp), json.dumps({"hash": exp.hash, "config": {}, "n_train": n_train,
                                                        "wall_time_s": 60 * minutes}))

    plan = chapter_plan("annealing", "smoke")
    kd, labels = plan[annealing.row("sst2", "KD")], plan[annealing.row("sst2", "labels only")]
    keep(kd[0], 2.0, 100)
    keep(labels[0], 1.5, 100)
    # the same kind of run on another task whose stored runs take twice as long per example and epoch
    on_mrpc = [e.replace(task="mrpc") for e in (labels[0], kd[0])]
    keep(on_mrpc[0], 3.0 * 2, 200)
    est = _estimates([*kd, *labels, *on_mrpc])
    assert est[kd[1].hash] == est[kd[-1].hash] == 2.0 and est[labels[1].hash] == 1.5  # the other seeds' time
    assert est[on_mrpc[1].hash] == pytest.approx(2.0 * 2 * 200 / 100)  # KD's pace on sst2, ×2 per example, ×2 examples
    assert kd[0].hash not in est and on_mrpc[0].hash not in est  # stored: nothing to estimate
    assert main(["experiment", "annealing", "--profile", "smoke", "--missing"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith(kd[1].hash) and line.endswith("≈ 2 min") for line in out)
    assert not any(line.startswith(annealing.stage_one(plan[annealing.row("sst2", "Annealing KD")][0]).hash)
                   and "≈" in line for line in out)  # no stored run of its kind: no estimate
    assert "h of training for " in out[-1]


def test_missing_estimates_an_augmented_run_per_example_of_its_task(store):
    """A run on an augmented transfer set records the grown set's size; its pace is taken per example of the
    task's own training set, so the growth is carried to another task (stop 33: MRPC's rewrites were estimated at
    11 min from RTE's 51, the growth lost)."""
    from kdlib.chapters import chapter_plan, mate
    from kdlib.cli import _estimates
    from kdlib.store import atomic_write_text, record_path

    def keep(exp, minutes, n_train):
        atomic_write_text(record_path(exp), json.dumps({"hash": exp.hash, "config": {}, "n_train": n_train,
                                                        "wall_time_s": 60 * minutes}))

    plan = chapter_plan("mate", "smoke")
    kd, rewrites = plan[mate.row("sst2", "KD")], plan[mate.row("sst2", "KD on masked-LM rewrites")]
    assert rewrites[0].augment is not None and kd[0].augment is None
    keep(rewrites[0], 6.0, 300)  # stored first: its grown set must not stand for the task's training set
    keep(kd[0], 2.0, 100)
    on_mrpc = [e.replace(task="mrpc") for e in (kd[0], rewrites[0])]
    keep(on_mrpc[0], 8.0, 200)  # KD is twice as slow per example on mrpc
    est = _estimates([*kd, *rewrites, *on_mrpc])
    assert est[on_mrpc[1].hash] == pytest.approx(6.0 / 100 * 2 * 200)  # 3 min per 100 sst2 examples, ×2, ×200
    assert est[kd[1].hash] == 2.0 and est[rewrites[1].hash] == 6.0  # the same task: the other seeds' time


@pytest.mark.parametrize("flag", [["--force"], ["--dry-run"], ["--batch", "4"]])
def test_missing_with_a_flag_that_trains_is_one_line(capsys, flag):
    line = error_line(capsys, ["experiment", "annealing", "--profile", "smoke", "--missing", *flag])
    assert line.endswith(f"--missing lists what is not stored and trains nothing: drop {flag[0]}")


def test_console_script_is_installed():
    exe = shutil.which("kdbook") or pytest.skip("kdbook not on PATH")
    proc = subprocess.run([exe, "run", CH1, "--profile", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("kdbook: error: unknown profile 'nope'")
    assert subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.startswith("kdlib ")


def test_build_uses_the_jupyter_book_beside_python_or_says_it_is_missing(tmp_path, monkeypatch, capsys):
    import sys

    import kdlib.cli as cli

    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(cli.shutil, "which", lambda name: None)
    assert "jupyter-book is not installed here" in error_line(capsys, ["build"])
    (tmp_path / "jupyter-book").write_text("")
    ran = []
    monkeypatch.setattr(cli.subprocess, "run", lambda cmd, cwd: ran.append(cmd) or type("R", (), {"returncode": 0}))
    assert main(["build"]) == 0 and ran[0][0] == str(tmp_path / "jupyter-book")


def test_a_notebook_outside_chapters_is_refused(tmp_path, capsys):
    outside = tmp_path / "01_hinton_kd.ipynb"
    shutil.copy(CH1, outside)
    assert f"unknown chapter {str(outside)!r}; valid choices: chapters/01_hinton_kd.ipynb" in error_line(
        capsys, ["run", str(outside), "--profile", "smoke"])


def test_profile_as_a_notebook_parameter_is_refused(capsys):
    assert "set the profile with --profile, not -p profile 'tpu'" in error_line(
        capsys, ["run", CH1, "--profile", "smoke", "-p", "profile", "tpu"])


def test_results_of_an_unknown_chapter(store, capsys):
    assert "unknown chapter 'ch99'; valid choices:" in error_line(capsys, ["results", "--chapter", "ch99"])


@pytest.mark.parametrize("shard, message", [("2", "shard '2' is not of the form i/N; valid choices: 1/N ... N/N"),
                                            ("3/2", "shard '3/2' is out of range; valid choices: 1/2 ... 2/2"),
                                            ("0/2", "shard '0/2' is out of range"), ("a/b", "is not of the form i/N")])
def test_bad_shard_is_one_line(capsys, shard, message):
    assert message in error_line(capsys, ["experiment", "hinton", "--profile", "smoke", "--shard", shard])


def test_shards_split_a_plan_exactly_once():
    from kdlib.chapters import chapter_plan
    from kdlib.cli import shard_plan

    plan = chapter_plan("hinton", "cpu")
    every = {e.hash for exps in plan.values() for e in exps}
    parts = [{e.hash for exps in shard_plan(plan, i, 3).values() for e in exps} for i in (1, 2, 3)]
    assert set().union(*parts) == every and sum(map(len, parts)) == len(every) and all(parts)


def test_two_shards_at_once_write_the_records_of_the_unsharded_run(tmp_path):
    """Two shards started together share one store (the teacher is made once, under its lock) and write exactly
    the records an unsharded run writes elsewhere."""
    import os
    import sys

    rows = ["student, KD T=2 α=0.5"]  # two seeds: one run for each shard, the teacher made once

    def start(store, *extra):
        env = {**os.environ, "KDLIB_RESULTS_DIR": str(store / "results"), "KDLIB_CACHE_DIR": str(store / "cache"),
               "KDLIB_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
        return subprocess.Popen([sys.executable, "-m", "kdlib.cli", "experiment", "hinton", "--profile", "smoke",
                                 "--only", *rows, *extra], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    shards = [start(tmp_path / "shared", "--shard", f"{i}/2") for i in (1, 2)]
    whole = start(tmp_path / "alone")
    for p in (*shards, whole):
        out, _ = p.communicate(timeout=900)
        assert p.returncode == 0, out[-2000:]

    def records(store):
        found = {}
        for f in (store / "results").rglob("*.json"):
            r = json.loads(f.read_text())
            found[f.relative_to(store / "results").as_posix()] = {k: r[k] for k in ("hash", "history", "best")}
        return found

    assert records(tmp_path / "shared") == records(tmp_path / "alone") and len(records(tmp_path / "alone")) >= 3


def test_run_all_runs_the_books_chapters_not_those_being_written():
    from kdlib.chapters import CHAPTERS, in_book
    from kdlib.cli import _notebooks

    listed = [ROOT / c.notebook for c in in_book(ROOT) if c.notebook.endswith(".ipynb")]
    assert _notebooks(ROOT) == listed
    written = [ROOT / c.notebook for c in CHAPTERS.values() if c not in in_book(ROOT) and c.notebook.endswith(".ipynb")]
    assert written and not set(written) & set(_notebooks(ROOT))  # e.g. chapter 4 until it joins _toc.yml
    from kdlib.cli import _resolve_notebook

    key = next(c.key for c in CHAPTERS.values() if ROOT / c.notebook == written[0])
    assert _resolve_notebook(key, ROOT) == written[0]  # named, a chapter being written still runs
