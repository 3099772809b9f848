import pandas as pd
import pytest

from helpers.frontier import cheapest_within, frontier_chart, pareto_front


@pytest.fixture
def table():
    return pd.DataFrame({
        "scheduler": ["A", "A", "A", "B", "B", "B"],
        "steps": [4, 12, 30, 4, 12, 30],
        "s/image": [0.10, 0.30, 0.75, 0.12, 0.30, 0.80],
        "both %": [40.0, 90.0, 95.0, 60.0, 94.0, 95.0],
    })


def test_pareto_front_keeps_only_settings_nothing_beats(table):
    front = pareto_front(table)
    # A4 is fastest; B4 is better than A4 for more time; A12 ties B12 on time and loses on adherence;
    # B30 ties A30 on adherence and is slower.
    assert front.tolist() == [True, False, True, True, True, False]


def test_pareto_front_keeps_exact_ties():
    tied = pd.DataFrame({"s/image": [1.0, 1.0], "both %": [50.0, 50.0]})
    assert pareto_front(tied).tolist() == [True, True]


def test_cheapest_within_two_points_of_the_best(table):
    best = cheapest_within(table, points=2)
    assert (best.scheduler, best.steps) == ("B", 12)  # 94 % is within 2 of 95 %, and faster than either 30
    assert cheapest_within(table, points=0).steps == 30


def test_missing_column_and_empty_table_say_what_to_do(table):
    with pytest.raises(KeyError, match="no 'quality' column"):
        pareto_front(table, gain="quality")
    with pytest.raises(ValueError, match="run the sweep first"):
        cheapest_within(table.iloc[:0])


def test_frontier_chart_marks_the_front(table):
    fig = frontier_chart(table, title="test")
    ax = fig.axes[0]
    assert ax.get_title() == "test"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["A", "B", "Pareto front"]
    front_line = next(line for line in ax.get_lines() if line.get_label() == "Pareto front")
    assert list(front_line.get_xdata()) == [0.10, 0.12, 0.30, 0.75]
