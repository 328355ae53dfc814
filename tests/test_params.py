"""ParamLayout: named views into one flat vector, no copies."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from kd_ref.params import ParamLayout

shapes = st.lists(st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple), min_size=1, max_size=5)


@given(shapes)
def test_views_tile_the_flat_vector_in_order_and_share_memory(block_shapes):
    layout = ParamLayout([(f"p{i}", s) for i, s in enumerate(block_shapes)])
    assert layout.size == sum(int(np.prod(s)) for s in block_shapes)
    flat = np.arange(layout.size, dtype=float)
    views = layout.views(flat)
    np.testing.assert_array_equal(np.concatenate([v.ravel() for v in views] + [np.zeros(0)]), flat)
    for name, view, shape in zip(layout.names, views, block_shapes):
        assert view.shape == shape
        np.testing.assert_array_equal(flat[layout.slice(name)], view.ravel())
        if view.size:
            assert np.shares_memory(view, flat)
    for view in views:
        view[...] = -1.0                      # writes land in the flat vector
    assert np.all(flat == -1.0)
    assert list(layout.named(flat)) == layout.names


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="expected distinct names, received 'W' twice"):
        ParamLayout([("W", (2,)), ("W", (3,))])
    layout = ParamLayout([("W", (2, 3)), ("b", (2,))])
    with pytest.raises(ValueError, match=r"flat: expected an ndarray of shape \(8,\), received ndarray of shape \(7,\)"):
        layout.views(np.zeros(7))
    with pytest.raises(ValueError, match=r"flat: expected an ndarray of shape \(8,\), received list of shape None"):
        layout.views([0.0] * 8)
    with pytest.raises(TypeError, match="flat: expected a real array, received dtype complex128"):
        layout.views(np.zeros(8, dtype=complex))
    with pytest.raises(ValueError, match=r"name: expected one of \['W', 'b'\], received 'c'"):
        layout.slice("c")
