"""Weights ↔ conductances: differential pairs, per-layer scale, placement."""

from __future__ import annotations

import numpy as np
import pytest

from harness.chip.protocol import Geometry
from harness.errors import MappingError
from harness.programming.mapping import map_weights

GEO = Geometry(rows=64, cols=128)


def layers(rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    return [("fc1", rng.normal(size=(20, 30))), ("fc2", rng.normal(size=(5, 20)))]


def test_targets_follow_the_differential_rule() -> None:
    w = np.array([[0.5, -1.0], [0.0, 0.25]])
    layout = map_weights([("l", w)], GEO)
    g_pos, g_neg = layout.pair_conductances(layout.target_uS, 0)
    s = 25.0 / 1.0
    np.testing.assert_allclose(g_pos, np.where(w > 0, s * w, 0.0))
    np.testing.assert_allclose(g_neg, np.where(w < 0, -s * w, 0.0))
    assert layout.target_uS.max() == pytest.approx(25.0)  # max|W| maps to g_max


def test_round_trip_recovers_weights_exactly() -> None:
    ws = layers(np.random.default_rng(0))
    layout = map_weights(ws, GEO)
    back = layout.to_weights(layout.target_uS)
    for name, w in ws:
        np.testing.assert_allclose(back[name], w, rtol=1e-12, atol=1e-12)


def test_to_weights_keeps_leading_batch_dims() -> None:
    ws = layers(np.random.default_rng(1))
    layout = map_weights(ws, GEO)
    batch = np.stack([layout.target_uS, 2 * layout.target_uS])
    back = layout.to_weights(batch)
    assert back["fc1"].shape == (2, 20, 30)
    np.testing.assert_allclose(back["fc1"][1], 2 * ws[0][1])


def test_devices_are_unique_and_blocks_do_not_overlap() -> None:
    layout = map_weights(layers(np.random.default_rng(2)), GEO)
    assert np.unique(layout.cells).size == layout.n_devices == 2 * (20 * 30 + 5 * 20)
    rows, cols = np.divmod(layout.cells, GEO.cols)
    for i, p in enumerate(layout.layers):
        m = layout.layer_index == i
        assert rows[m].min() == p.row0 and rows[m].max() == p.row0 + p.fan_in - 1
        assert cols[m].min() == p.col0 and cols[m].max() == p.col0 + 2 * p.out_features - 1


def test_layers_wrap_to_a_new_shelf_when_a_row_is_full() -> None:
    ws = [(f"l{i}", np.ones((40, 10))) for i in range(3)]  # 80 columns each, 128 available
    layout = map_weights(ws, GEO)
    assert [(p.row0, p.col0) for p in layout.layers] == [(0, 0), (10, 0), (20, 0)]


@pytest.mark.parametrize(
    ("ws", "message"),
    [
        ([("big", np.ones((65, 10)))], "needs a 10x130 block"),
        ([("wide", np.ones((70, 200)))], "needs a 200x140 block .* fits neither transposed nor split"),
        ([(f"l{i}", np.ones((40, 30))) for i in range(3)], "does not fit"),
        ([], "no analog layers"),
        ([("z", np.zeros((2, 2)))], "only zero weights"),
        ([("n", np.array([[np.nan, 1.0]]))], "NaN"),
        ([("v", np.ones(3))], "expected a non-empty"),
    ],
)
def test_bad_models_are_refused_with_a_clear_message(ws, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        map_weights(ws, GEO)


def _check_cells_hold_their_weights(layout, ws) -> None:
    """Every device is unique, on the array, and the layout's targets give the weights back."""
    assert np.unique(layout.cells).size == layout.n_devices
    assert layout.cells.min() >= 0 and layout.cells.max() < layout.geometry.n_cells
    back = layout.to_weights(layout.target_uS)
    for name, w in ws:
        np.testing.assert_allclose(back[name], w, rtol=1e-12, atol=1e-12)


def test_a_tall_block_is_transposed_and_recorded() -> None:
    rng = np.random.default_rng(5)
    ws = [("small", rng.normal(size=(8, 10))), ("tall", rng.normal(size=(20, 100)))]  # 100 rows > 64
    layout = map_weights(ws, GEO)
    small, tall = layout.layers
    assert not small.transposed and tall.transposed and tall.how == "transposed"
    assert (tall.n_rows, tall.n_cols) == (40, 100)
    rows, cols = np.divmod(layout.cells[layout.layer_index == 1], GEO.cols)
    n = 20 * 100
    # G+ of output o, input k at (row0 + 2o, col0 + k); G- one row below.
    np.testing.assert_array_equal(rows[:n] - tall.row0, np.repeat(2 * np.arange(20), 100))
    np.testing.assert_array_equal(cols[:n] - tall.col0, np.tile(np.arange(100), 20))
    np.testing.assert_array_equal(rows[n:], rows[:n] + 1)
    _check_cells_hold_their_weights(layout, ws)


def test_a_block_too_tall_both_ways_is_split_into_row_pieces() -> None:
    rng = np.random.default_rng(6)
    ws = [("deep", rng.normal(size=(20, 150)))]  # 150 rows > 64; transposed: 150 cols > 128
    layout = map_weights(ws, GEO)
    (deep,) = layout.layers
    assert not deep.transposed and deep.how == "split into 3 row pieces"
    assert [(k0, k1) for k0, k1, _, _ in deep.blocks()] == [(0, 50), (50, 100), (100, 150)]
    rows, cols = np.divmod(layout.cells, GEO.cols)
    for k0, k1, r0, c0 in deep.blocks():
        in_piece = np.isin(layout.weight_index % 150, np.arange(k0, k1))
        assert rows[in_piece].min() == r0 and rows[in_piece].max() == r0 + (k1 - k0) - 1
        assert cols[in_piece].min() == c0 and cols[in_piece].max() == c0 + 2 * 20 - 1
    _check_cells_hold_their_weights(layout, ws)


def test_placements_survive_a_json_round_trip() -> None:
    import json
    from dataclasses import asdict

    from harness.programming.mapping import LayerPlacement

    layout = map_weights([("deep", np.ones((20, 150)))], GEO)
    again = LayerPlacement(**json.loads(json.dumps(asdict(layout.layers[0]))))
    assert again == layout.layers[0]


def test_largest_weight_maps_to_g_max_without_rounding_above_it() -> None:
    # 0.6369616873214543 · (25 / 0.6369616873214543) rounds to 25.000000000000004 in float64:
    # the target must still be inside the chip's range (programming refuses anything above).
    from harness.chip.protocol import Geometry
    from harness.programming.mapping import map_weights

    geometry = Geometry(rows=8, cols=8, g_min_uS=0.0, g_max_uS=25.0)
    w_max = 0.6369616873214543
    assert w_max * (25.0 / w_max) > 25.0
    layout = map_weights([("fc", np.array([[w_max, -w_max, 0.1]]))], geometry)
    assert layout.target_uS.max() == 25.0


def test_fallback_placement_keeps_no_caller_frames_alive() -> None:
    """The first placement's MappingError is kept for the message without its traceback: its
    frames would hold every caller's locals (a virtual chip of ~125 MB for AnalogNet-KWS in
    ``harness evaluate``) in a reference cycle until the garbage collector ran."""
    import gc
    import weakref

    from harness.chip.protocol import Geometry
    from harness.programming.mapping import place_layers_anyhow

    class Big:
        pass

    def caller() -> weakref.ref[Big]:
        big = Big()
        placed = place_layers_anyhow([("a", 2, 20)], Geometry(rows=8, cols=16))  # needs the fallback: split
        assert placed[0].pieces
        return weakref.ref(big)

    gc.disable()
    try:
        ref = caller()
        assert ref() is None
    finally:
        gc.enable()
