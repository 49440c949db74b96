"""Chapter 8's plan: every method on one student, built by each method's own chapter, so that a run a chapter
made in this setting is the same experiment (the same hash) and is reused, not trained again."""
from kdlib.chapters import chapter_plan, compare
from kdlib.profiles import get_profile


def test_every_method_in_one_setting_reuses_the_chapters_runs():
    cpu = get_profile("cpu")
    plan = compare.plan(cpu)
    assert list(plan)[:3] == ["sst2 · teacher", "sst2 · labels only", "sst2 · label smoothing"]
    assert {len(v) for k, v in plan.items() if not k.endswith("teacher")} == {3}
    pkd, alp = chapter_plan("pkd", "cpu"), chapter_plan("alp", "cpu")
    assert [e.hash for e in plan["mrpc · PKD-Skip"]] == [e.hash for e in pkd["mrpc · 3 layers · PKD-Skip"]]
    assert [e.hash for e in plan["stsb · ALP-KD"]] == [e.hash for e in alp["stsb · 3 layers · ALP-KD"]]
    assert [e.hash for e in plan["sst2 · KD"]] == [e.hash for e in pkd["sst2 · 3 layers · vanilla KD"]]
    for name in ("TinyBERT TD", "Annealing KD", "MATE-KD", "TAKD", "label smoothing"):  # one student for all
        runs = plan[f"rte · {name}"]
        first = runs[0].model.run if runs[0].model.kind == "from_run" else runs[0]
        while first.model.kind == "from_run":
            first = first.model.run
        assert first.model.layers == (0, 1, 2), name
    assert plan["cola · TAKD"][0].teacher.model.layers == (0, 1, 2, 3)  # halfway between 3 and 6 layers
    assert plan["rte · TinyBERT TD, no augmentation"][0].augment is None
    assert plan["rte · TinyBERT TD"][0].augment is not None
    assert plan["sst2 · teacher"][0].hash == chapter_plan("hinton", "cpu")["teacher"][0].hash
    assert "stsb · label smoothing" not in plan and "cola · label smoothing" in plan  # no classes on STS-B


def test_a_chapter_planned_before_its_page_says_how_to_run_it(monkeypatch, capsys, tmp_path):
    from kdlib import chapters
    from kdlib.cli import main

    monkeypatch.setitem(chapters.CHAPTERS, "later", chapters.Chapter("later", "chapters/99_later.ipynb", "Later", "compare"))
    assert main(["run", "later", "--profile", "smoke", "--output", str(tmp_path / "x.ipynb")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("kdbook: error: chapter 'later' has no notebook yet (chapters/99_later.ipynb); its experiments run "
                   "with: kdbook experiment later")
    assert not (tmp_path / "x.ipynb").exists()


def test_the_slides_claim_is_read_on_the_chapters_tasks():
    """The seed deck's figures on the chapter's five tasks, under the book's names: averaged over those tasks they
    keep the slide's order (the chapter's text says so), KD last and MATE-KD first."""
    from kdlib.chapters import compare
    from kdlib.profiles import get_profile

    t = compare.claimed(get_profile("cpu"))
    df = t.df
    assert list(df.columns) == ["SST-2", "MRPC", "STS-B", "CoLA", "RTE", "average", "rank of average"]
    assert df.loc["MATE-KD", "CoLA"] == 60.4 and df.loc["KD", "average"] == round((90.4 + 89.5 + 86.7 + 47.3 + 66) / 5, 2)
    ranked = df.drop(index="teacher")["rank of average"]
    claimed = [m for m in compare.CLAIMED_ORDER if m in ranked.index]
    assert list(ranked[claimed]) == sorted(ranked, reverse=True)  # worst first, as claimed
    assert "seed deck" in t.caption and "quoted" in t.caption


def test_a_runs_teacher_passes_and_peak_memory(store):
    """KD reads a cache made once: one teacher pass per training example; labels only: none. Both records hold
    the run's peak memory."""
    from kdlib.chapters import peak_memory_mb, teacher_passes
    from kdlib.config import Experiment, LayerCopy, Pretrained

    base = dict(chapter="test", profile="smoke", task="sst2", data="synthetic", train_size=48, dev_size=16, epochs=1,
                lr=1e-3, batch_size=16, max_length=20, seed=0, model=LayerCopy("minilm-l6", (0,)))
    t = Experiment(**{**base, "chapter": "teachers", "method": "finetune", "model": Pretrained("minilm-l6"),
                      "keep_model": True})
    labels = Experiment(**{**base, "method": "finetune"})
    kd = Experiment(**{**base, "method": "kd", "teacher": t, "hparams": {"T": 2.0, "alpha": 0.5}})
    assert teacher_passes(labels) == 0 and teacher_passes(kd) == 1
    assert peak_memory_mb(kd) > 50 and peak_memory_mb(labels) > 50


def test_the_pareto_front_keeps_what_no_cheaper_point_beats():
    from kdlib.chapters.compare import pareto_front

    cost = [1, 2, 2, 3, 4, 5]
    score = [80, 79, 85, 85, 90, 88]
    assert pareto_front(cost, score) == [True, False, True, False, True, False]
    assert pareto_front([], []) == []


def test_every_student_shape_of_the_book_is_found_on_sst2():
    from kdlib.chapters import compare
    from kdlib.profiles import get_profile

    rows = compare.book_students(get_profile("cpu"))
    shapes = {compare.architecture(e[0].model) for e in rows.values()}
    assert {"BiLSTM 150", "2-layer copy of minilm-l6", "3-layer copy of minilm-l6", "BERT L2 H156",
            "minilm-l6 (the teacher)"} <= shapes
    hashes = [frozenset(e.hash for e in exps) for exps in rows.values()]
    assert len(hashes) == len(set(hashes))  # a row two chapters share counts once
