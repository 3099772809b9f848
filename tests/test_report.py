import matplotlib
import pytest

from helpers.report import GUIDE_T4, Results

matplotlib.use("Agg")


def ladder(reference=None):
    results = Results(reference=reference)
    results.add("float32, PNDM 50 steps", 8.0)
    results.add("half precision, PNDM 50 steps", 4.0)
    results.add("recipe precision, DPM-Solver++ 20 steps", 1.6, steps=20)
    return results


def test_frame_has_speedup_over_the_first_row():
    df = ladder().frame()
    assert list(df["speedup"]) == [1.0, 2.0, 5.0]
    assert df.loc["recipe precision, DPM-Solver++ 20 steps", "steps"] == 20


def test_reference_figures_stay_in_their_own_columns():
    df = ladder(GUIDE_T4).frame()
    ref = [c for c in df.columns if c.startswith("reference")]
    assert ref == ["reference: guide, T4", "reference speedup"]
    assert list(df["seconds"]) == [8.0, 4.0, 1.6]  # measured values untouched
    assert list(df[ref[0]]) == [30.0, 11.0, 4.0]
    assert df["reference speedup"].iloc[-1] == 7.5


def test_chart_puts_reference_in_a_separate_labelled_panel():
    fig = ladder(GUIDE_T4).chart()
    assert len(fig.axes) == 2
    assert "Reference" in fig.axes[1].get_title() and "measured" in fig.axes[0].get_xlabel()
    assert len(ladder().chart().axes) == 1


def test_empty_and_duplicate_rows_are_errors():
    with pytest.raises(ValueError, match="No rows"):
        Results().frame()
    results = ladder()
    with pytest.raises(ValueError, match="already added"):
        results.add("float32, PNDM 50 steps", 1.0)


def test_describe_reads_the_table():
    text = ladder(GUIDE_T4).describe().splitlines()
    assert text == ["half precision, PNDM 50 steps: 2.0x faster than float32, PNDM 50 steps here "
                    "(the reference: 2.7x).",
                    "recipe precision, DPM-Solver++ 20 steps: 5.0x faster than float32, PNDM 50 steps here "
                    "(the reference: 7.5x)."]
    slower = Results()
    slower.add("a", 1.0)
    slower.add("b", 4.0)
    assert slower.describe() == "b: 4.0x slower than a here."
    slower.add("c", 1.02)
    assert slower.describe().splitlines()[-1] == "c: about as fast as a here (0.98x)."
    rounded = Results()  # 3.809 s against 30.292 s: 7.95x, not 1 / 0.13 from the table's rounded speedup
    rounded.add("a", 3.809)
    rounded.add("b", 30.292)
    assert rounded.frame().speedup.iloc[-1] == 0.13 and rounded.describe() == "b: 8.0x slower than a here."


def test_describe_joins_notes_for_a_near_tie_with_a_reference():
    results = Results(reference={"a": 10.0, "b": 5.0})
    results.add("a", 1.0)
    results.add("b", 1.01)
    assert results.describe() == "b: about as fast as a here (0.99x; the reference: 2.0x)."
