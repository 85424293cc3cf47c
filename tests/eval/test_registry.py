import pytest

from llava_ckd.eval.registry import BENCHMARKS, UnknownBenchmarkError, benchmark_names, get_benchmark

from .conftest import line_count


def test_every_benchmark_is_registered_under_its_name():
    assert benchmark_names() == [
        "gqa", "mmbench", "mmbench-cn", "mme", "mmmu", "pope", "scienceqa", "synthetic", "textvqa", "vizwiz", "vqav2",
    ]
    assert all(get_benchmark(name).name == name for name in BENCHMARKS)


def test_long_answers_only_for_multiple_choice_reasoning_sets():
    long_answers = {name for name, b in BENCHMARKS.items() if b.max_new_tokens == 1024}
    assert long_answers == {"scienceqa", "mmbench", "mmbench-cn", "mmmu"}
    short_answers = {name for name in BENCHMARKS if name not in long_answers | {"synthetic"}}
    assert {BENCHMARKS[name].max_new_tokens for name in short_answers} == {128}
    assert BENCHMARKS["synthetic"].max_new_tokens == 8  # the project's own set: one-word answers


def test_unknown_benchmark_lists_the_known_ones():
    with pytest.raises(UnknownBenchmarkError, match="unknown benchmark 'popes'; known: gqa, mmbench"):
        get_benchmark("popes")


@pytest.mark.parametrize("name", ["pope", "mme"])
def test_llava_question_files_load_whole(llava_benchmarks, name):
    data_dir = llava_benchmarks / name
    questions = get_benchmark(name).questions(data_dir)
    assert len(questions) == line_count(data_dir / "questions.jsonl")
    assert all(q.image.is_absolute() and "<image>" not in q.prompt for q in questions)
