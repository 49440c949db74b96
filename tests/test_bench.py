"""kdbook bench (kdlib.bench): the Trainer recipe and kdlib's loop, side by side, computing the same loss."""
import pytest
import torch

from kdlib.errors import KDLibError


def test_the_trainer_recipe_and_kdlib_compute_the_same_kd_loss():
    """The comparison is of loops, not of losses: on one batch the Trainer side's loss equals kdlib's KD
    objective's, teacher and student the same."""
    from transformers import TrainingArguments

    from kdlib import bench
    from kdlib.data import collate, encode, synthetic_task
    from kdlib.methods import make_objective
    from kdlib.models import load_tokenizer

    tok = load_tokenizer("minilm-l6")
    enc = encode(tok, synthetic_task("sst2", "train", 8), 32)
    teacher, student = bench._teacher("minilm-l6", 2), bench._student("minilm-l6", (0,), 2)
    student.eval()  # no dropout: the two forward passes must see the same network
    batch = collate(enc, list(range(8)))
    batch.pop("idx")
    args = TrainingArguments(output_dir="/tmp/kdlib-bench-test", report_to=[], use_cpu=True)
    trainer = bench._KDTrainer.get()(model=student, args=args, teacher=teacher, T=4.0, alpha=0.9)
    theirs = trainer.compute_loss(student, dict(batch)).detach()
    with torch.no_grad():
        t_logits = teacher(**{k: v for k, v in batch.items() if k != "labels"}).logits
        ours = make_objective("kd", {"T": 4.0, "alpha": 0.9}).loss(
            student(**{k: v for k, v in batch.items() if k != "labels"}), {**batch, "teacher_logits": t_logits})
    assert float(theirs) == pytest.approx(float(ours), rel=1e-6)


def test_a_small_bench_times_every_side_and_stores_it(store):
    from kdlib.bench import SIDES, stored_bench

    rec = stored_bench(examples=48, rounds=1, seeds=1, batch_size=16, max_length=32)
    assert rec["data"] == "synthetic" and rec["examples"] == 48 and rec["workload_runs"] == 2
    for r in rec["rounds"]:
        assert set(r) == set(SIDES) and len(r["kdlib"]["runs"]) == len(r["trainer, grouped"]["runs"]) == 2
        assert len(r["trainer, padded"]["runs"]) == 1 and r["kdlib"]["cache"] > 0
    s = rec["summary"]
    assert all(v["min"] <= v["median"] <= v["max"] and v["min"] > 0 for v in {**s["examples_per_s"],
                                                                             **s["ratios"]}.values())
    assert rec["config"]["device"] == "cpu" and "hardware" in rec and "wall_time_s" in rec
    again = stored_bench(examples=48, rounds=1, seeds=1, batch_size=16, max_length=32)
    assert again == rec  # stored: read, not measured again


def test_a_small_stacked_bench_times_both_sides_counts_a_step_and_stores_it(store):
    from kdlib.bench import stored_bench_stacked

    rec = stored_bench_stacked(examples=48, rounds=2, stacks=(3,), batch_size=16, max_length=32)
    assert rec["examples"] == 48 and [set(r) for r in rec["rounds"]] == [{"sequential 3", "stacked 3"}] * 2
    s = rec["summary"]["3"]
    assert s["speedup"]["min"] <= s["speedup"]["median"] <= s["speedup"]["max"]
    # a stacked step does the arithmetic of its seeds' steps in fewer operator calls than they take apart
    assert s["flops per step: one stacked step / S lone steps"] == pytest.approx(1.0, rel=0.15)
    assert s["ops per step: S lone steps / one stacked step"] > 1.3
    h = s["h100 estimate"]
    assert h["fast"]["speedup"] > 1.3 and h["slow"]["speedup"] > 1.3
    assert stored_bench_stacked(examples=48, rounds=2, stacks=(3,), batch_size=16, max_length=32) == rec


@pytest.mark.parametrize("kw, message", [({"examples": 0}, "examples must be an integer >= 1, got 0"),
                                         ({"sides": ("trainer, fast",)}, "unknown side 'trainer, fast'"),
                                         ({"task": "stsb"}, "task 'stsb' is not one")])
def test_bad_bench_settings_are_one_line(kw, message):
    from kdlib.bench import bench

    with pytest.raises(KDLibError, match=message):
        bench(**kw)


@pytest.mark.parametrize("stacks", [(1,), (3, 2.5)])
def test_a_bad_stack_size_is_one_line(stacks):
    from kdlib.bench import bench_stacked

    with pytest.raises(KDLibError, match=f"a stack's size must be an integer >= 2, got {stacks[-1]}"):
        bench_stacked(stacks=stacks)


def test_bad_bench_options_on_the_command_line_are_one_line_and_write_nothing(capsys, store):
    from kdlib.cli import main
    from kdlib.store import results_dir

    assert main(["bench", "--examples", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "kdbook: error: examples must be an integer >= 1, got 0"
    assert not results_dir().exists()


def test_the_tuning_summary_of_hand_made_rounds():
    from kdlib.bench import THREADS, summarize_tuning

    def epochs(seconds, losses):
        return [{"seconds": 10.0, "losses": losses}, {"seconds": seconds, "losses": losses}]

    rounds = [{**dict(zip(THREADS, (20.0, 10.0, 40.0))), "eager": epochs(6.0, [0.5, 0.4]),
               "compiled": epochs(4.0, [0.5, 0.4])},
              {**dict(zip(THREADS, (20.0, 16.0, 40.0))), "eager": epochs(6.0, [0.5, 0.4]),
               "compiled": epochs(3.0, [0.5, 0.41])}]
    s = summarize_tuning(rounds, 100)
    one, ones, twos = (s["threads"][k] for k in THREADS)
    assert one["examples/s"]["median"] == 10.0 and one["ratio to one after another"]["median"] == 1.0
    assert ones["examples/s"] == {"median": 16.25, "min": 12.5, "max": 20.0}
    assert ones["ratio to one after another"] == {"median": 1.625, "min": 1.25, "max": 2.0}
    assert twos["ratio to one after another"]["median"] == 0.5
    from kdlib.chapters.cost import tuning_finding

    text = tuning_finding({"summary": s})
    assert "{" not in text and "1.62× as fast" in text and "One thread per job is adopted" in text
    assert "differ from eager's by up to 0.01" in text and "It is not adopted" in text
    c = s["compile"]
    assert c["speedup (second epoch)"] == {"median": 1.75, "min": 1.5, "max": 2.0}
    assert c["compiling, extra seconds (first epoch)"]["median"] == 0.0
    assert c["largest loss difference"] == pytest.approx(0.01) and c["losses identical"] is False


def test_two_jobs_side_by_side_are_timed_from_a_common_start():
    from kdlib import bench
    from kdlib.data import encode, synthetic_task
    from kdlib.models import load_tokenizer

    tok = load_tokenizer("minilm-l6")
    enc = encode(tok, synthetic_task("sst2", "train", 16), 16)
    job = ("sst2", enc, torch.zeros(16, 2), bench.SETTINGS[0], 8, 1e-4, 0, "minilm-l6", (0,), 2)
    assert 0 < bench.threads_side("side by side, 1 thread each", job) < 120


def test_a_glue_folder_that_is_not_there_is_one_line_not_synthetic_data(monkeypatch, tmp_path):
    from kdlib.bench import _data

    monkeypatch.setenv("KDLIB_GLUE_DIR", str(tmp_path / "nope"))
    with pytest.raises(KDLibError, match="does not exist"):
        _data("sst2", 8)
    monkeypatch.delenv("KDLIB_GLUE_DIR")
    assert _data("sst2", 8)[1] in ("glue", "synthetic")
