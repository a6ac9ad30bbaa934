"""RowIds: a lazy view of some rows' ids that behaves like the list it replaces."""

from __future__ import annotations

import numpy as np

from twinbert_search.stores.base import Candidates, RowIds, take_ids

TABLE = [f"d{i}" for i in range(10)]


def test_reads_like_the_list_of_its_rows() -> None:
    view = RowIds(TABLE, np.array([7, 2, 9]))
    assert len(view) == 3
    assert view[0] == "d7" and view[-1] == "d9" and view[np.int64(1)] == "d2"
    assert list(view) == ["d7", "d2", "d9"]
    assert view == ["d7", "d2", "d9"] and view == ("d7", "d2", "d9")
    assert view != ["d7", "d2"]
    assert view[1:] == ["d2", "d9"] and isinstance(view[1:], RowIds)
    assert "d2" in view and "d3" not in view
    assert view.index("d9") == 2
    assert sorted(view) == ["d2", "d7", "d9"]


def test_take_keeps_a_view_and_lists_stay_lists() -> None:
    view = RowIds(TABLE, np.array([7, 2, 9]))
    taken = take_ids(view, np.array([2, 0]))
    assert isinstance(taken, RowIds) and taken == ["d9", "d7"]
    assert take_ids(["a", "b", "c"], [2, 0]) == ["c", "a"]
    assert take_ids(view, []) == []


def test_candidates_take_with_a_view() -> None:
    candidates = Candidates(
        ids=RowIds(TABLE, np.array([4, 5, 6])),
        recall_scores=np.array([0.9, 0.8, 0.7], np.float32),
        vectors=np.eye(3, dtype=np.float32),
    )
    taken = candidates.take([2, 1])
    assert taken.ids == ["d6", "d5"] and len(taken) == 2
    np.testing.assert_array_equal(taken.vectors, np.eye(3, dtype=np.float32)[[2, 1]])
