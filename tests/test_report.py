import numpy as np
import pytest

from kdlib import report


def rec(acc, seed=0, history=None, agreement=None):
    return {"config": {"task": "sst2", "profile": "cpu", "data": "glue", "epochs": 1, "lr": 1e-4, "batch_size": 64,
                       "model": {"kind": "layer_copy", "checkpoint": "minilm-l6", "layers": [0, 1]}, "seed": seed},
            "best": {"epoch": 1.0, "accuracy": acc}, "history": history or [{"epoch": 1.0, "accuracy": acc}],
            "student_params": 13_800_000, "n_train": 67349, "n_dev": 872, "wall_time_s": 120.0,
            "teacher": {"agreement": agreement} if agreement is not None else None,
            "hardware": {"cpu_count": 2}, "kdlib_version": "0.1.0", "git_commit": "abcdef1234567890"}


def test_mean_std():
    assert report.mean_std([83.0, 84.0, 85.0]) == "84.0 ± 1.0"
    assert report.mean_std([83.37]) == "83.4"


def test_results_table_reads_the_records():
    results = {"labels": [rec(83.0, 0), rec(85.0, 1)], "kd": [rec(86.0, 0, agreement=90.0), rec(86.0, 1, agreement=92.0)]}
    t = report.results_table(results, paper={"kd": "74"}, paper_label="paper")
    assert list(t.index) == ["labels", "kd"]
    assert t.loc["labels", "dev accuracy"] == "84.0 ± 1.4" and t.loc["kd", "dev accuracy"] == "86.0 ± 0.0"
    assert t.loc["kd", "agrees with teacher %"] == "91.0 ± 1.4" and t.loc["labels", "agrees with teacher %"] == "–"
    assert t.loc["kd", "paper"] == "74" and t.loc["labels", "paper"] == ""
    assert t.loc["kd", "min / run"] == "2.0" and t.loc["kd", "train examples"] == "67,349"


def test_difference_and_curve():
    a, b = [rec(86.0, 0), rec(87.0, 1), rec(86.5, 2)], [rec(83.0, 0), rec(84.0, 1), rec(83.5, 2)]
    text = report.difference(a, b)
    assert text == "+3.00 points (3 vs 3 seeds, Welch t-test p < 0.01)"  # p ≈ 0.002
    h = lambda x: [{"epoch": 0.5, "accuracy": x - 2}, {"epoch": 1.0, "accuracy": x}]
    x, m, s = report.curve([rec(80, 0, h(80)), rec(82, 1, h(82))])
    assert list(x) == [0.5, 1.0] and list(m) == [79.0, 81.0] and s[0] == pytest.approx(np.sqrt(2))


def test_plateau_says_what_the_last_quarter_added():
    h = lambda x: [{"epoch": e, "accuracy": x - 4 + 2 * e} for e in (0.5, 1.0, 1.5, 2.0)]  # still rising
    flat = lambda x: [{"epoch": e, "accuracy": x} for e in (0.5, 1.0, 1.5, 2.0)]
    t = report.plateau({"rising": [rec(80, 0, h(80)), rec(82, 1, h(82))], "flat": [rec(85, 0, flat(85))]})
    assert t.loc["rising", "gain in the last quarter"] == 1.0  # 81 at epoch 2, 80 at 1.5
    assert t.loc["rising", "std over seeds"] == pytest.approx(1.41, abs=0.01)
    assert t.loc["flat", "gain in the last quarter"] == 0.0 and t.loc["flat", "epochs"] == 2.0


def test_describe_setting_and_softmax():
    line = report.describe_setting([rec(80.0)], width=None)
    assert "profile cpu, task sst2 (glue data, 67,349 train / 872 dev)" in line and "@ abcdef123456" in line
    assert all(len(l) <= 84 for l in report.describe_setting([rec(80.0)]).splitlines())
    p = report.softmax([[np.log(3), 0.0]], T=1)
    assert np.allclose(p, [[0.75, 0.25]]) and np.allclose(report.entropy_bits([[0.5, 0.5]]), [1.0])


def test_agreement_against_a_given_teacher():
    teacher = {**rec(90.0), "hash": "t", "dev_logits": [[1, 0], [0, 1], [0, 1], [1, 0]]}
    student = {**rec(80.0), "hash": "s", "dev_logits": [[1, 0], [1, 0], [0, 1], [1, 0]]}
    assert report.agreement(student, teacher) == 75.0
    t = report.results_table({"teacher": [teacher], "student": [student]}, teacher=teacher)
    assert t.loc["student", "agrees with teacher %"] == "75.0" and t.loc["teacher", "agrees with teacher %"] == "–"


def test_pivot_summary_matrix_and_cost_table():
    results = {"sst2 · 3 · kd": [rec(86.0, 0), rec(88.0, 1)], "sst2 · 2 · kd": [rec(84.0, 0)]}
    t = report.pivot(results, ["kd", "pkd"], [3, 2], lambda r, d: f"sst2 · {d} · {r}")
    assert t.loc["kd", 3] == "87.0 ± 1.4" and t.loc["kd", 2] == "84.0" and t.loc["pkd", 3] == "–"
    a, b = rec(86.0, 0), rec(88.0, 1)
    a["summary"], b["summary"] = {"w": [[1.0, 0.0], [0.5, 0.5]]}, {"w": [[0.0, 1.0], [0.5, 0.5]]}
    assert report.summary_matrix([a, b], "w").tolist() == [[0.5, 0.5], [0.5, 0.5]]
    with pytest.raises(ValueError, match="no record holds a 'alp_weights' summary"):
        report.summary_matrix([rec(80.0)], "alp_weights")
    a["teacher_floats_per_example"] = 2 + 2 * 384  # logits + two mapped layers
    labels, old = rec(80.0), rec(80.0)
    labels["teacher_floats_per_example"] = None  # trained on labels: reads no teacher state
    c = report.cost_table({"pkd": [a, b], "labels": [labels], "old": [old]}, ["pkd", "labels", "old"])
    assert c.loc["pkd", "teacher numbers / example"] == "770"
    assert c.loc["pkd", "teacher KiB / step"] == f"{770 * 2 * 64 / 1024:.1f}"  # float16, batch 64
    assert c.loc["labels", "teacher numbers / example"] == "0" and c.loc["pkd", "min / run"] == "2.0"
    assert c.loc["pkd", "ran on"] == "CPU, ? thread(s)"
    assert c.loc["old", "teacher numbers / example"] == "not recorded" and c.loc["old", "teacher KiB / step"] == "–"
    a["hardware"] = {"cpu_count": 2, "torch_threads": 1}
    assert report.cost_table({"pkd": [a]}, ["pkd"]).loc["pkd", "ran on"] == "CPU, 1 thread(s)"


def test_a_table_carries_its_caption_and_renders_deterministically():
    import pandas as pd

    from kdlib.report import Table

    t = Table(pd.DataFrame({"model": ["a", "b"], "score": ["1.0", "2.0"]}), "SST-2 dev accuracy, cpu profile")
    html = t._repr_html_()
    assert "<caption>SST-2 dev accuracy, cpu profile</caption>" in html and 'class="dataframe"' in html
    assert html == t._repr_html_() and "0x" not in repr(t)  # no random ids, no addresses: nbval compares them
    assert "row0_col0" in html and ">0<" not in html  # a 0…N index is not shown
    assert repr(t).splitlines()[0] == "SST-2 dev accuracy, cpu profile"
    named = Table(pd.DataFrame({"score": [1]}, index=pd.Index(["KD"])), "x")
    assert ">KD<" in named._repr_html_()


def test_p_values_as_a_paper_writes_them():
    from kdlib.report import p_value

    assert [p_value(p) for p in (0.004, 0.0099, 0.01, 0.372)] == ["p < 0.01", "p < 0.01", "p = 0.01", "p = 0.37"]


def test_ran_on_names_the_machine_and_says_when_runs_come_from_several():
    cpu = {"cpu_count": 2, "torch_threads": 1}
    one = [{"hardware": {**cpu, "cpu_capability": "AVX512"}}] * 2
    assert report.ran_on(one) == "a 2-core CPU, 1 thread(s) per run"
    mixed = one + [{"hardware": {**cpu, "cpu_capability": "AVX2"}}, {"hardware": dict(cpu)}]
    assert report.ran_on(mixed) == ("a 2-core CPU, 1 thread(s) per run (more than one machine: runs per CPU "
                                    "vector-kernel set, AVX2 1, AVX512 2, not recorded 1; a time compares with one "
                                    "from another machine only roughly)")
    assert report.ran_on([{"hardware": {"gpu": "NVIDIA H100"}}] * 2) == "NVIDIA H100"
    assert report.ran_on([{"hardware": {"gpu": "NVIDIA H100"}}, {"hardware": cpu}]) == "NVIDIA H100 (1 of the 2 runs on a CPU)"
    assert report.ran_on([{}]) == "a ?-core CPU, ? thread(s) per run"
