"""The vision tower's cell targets: a blended shape's colour is split between its two colours as annotators
name it, so the frozen tower's tokens say how far between them it was painted."""

from llava_ckd.data.synthetic import COLOURS, KINDS
from llava_ckd.train.vision import cell_labels


def test_a_blended_cell_splits_its_colour_target_by_the_mix():
    scene = {"objects": [{"kind": "circle", "colour": "blue", "row": 0, "col": 1, "blend": "purple", "mix": 0.35},
                         {"kind": "cross", "colour": "red", "row": 1, "col": 0}]}
    colours, kinds = cell_labels(scene, grid=2)
    assert colours[0] == [1.0, 0, 0, 0, 0, 0]                      # empty
    assert colours[1][COLOURS.index("blue") + 1] == 0.65 and colours[1][COLOURS.index("purple") + 1] == 0.35
    assert colours[2][COLOURS.index("red") + 1] == 1.0
    assert kinds == [0, KINDS.index("circle") + 1, KINDS.index("cross") + 1, 0]
    assert all(abs(sum(cell) - 1) < 1e-12 for cell in colours)

