"""The seeds and tolerances of the notebooks' checks that depend on the shipped `shapes` weights (03), defined once.

``scripts/check_shapes_seeds.py`` imports them too and checks, after a retraining, whether they still hold.
"""

# 03's tweak: the seed whose circle keeps its place when only the colour word changes. A scan of seeds 0-23 in
# float32, bfloat16 and float16 found it (docs/shapes.md); 03 shows seeds 8-15, this one among them.
TWEAK_SEED = 11
TWEAK_MOVE_PX = 9  # the tweak's circle is about 40 px across: its centroids stay within 9 px of each other,
TWEAK_AREA_RATIO = 1.25  # and its areas within 25 %
