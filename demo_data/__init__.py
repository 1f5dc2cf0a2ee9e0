"""Built-in demo datasets: a tiny COCO-layout instance set and a tiny ADE20k-layout semantic set.

A leaf package (it imports nothing of this project), so the engine and the models never pull in
its cv2 / pycocotools drawing code; the dataset builders call :func:`ensure_demo_coco` /
:func:`ensure_demo_ade` when a config names the demo root.

Both sets are drawn procedurally from a seed, so the whole pipeline (pretraining, Mask R-CNN,
UperNet, evaluation) runs offline in minutes on a CPU, and tests get real files in the real layouts.

COCO part (``<root>/demo_coco``, :mod:`demo_data.coco`): three shape classes (circle, square,
triangle) with COCO-like non-contiguous ids (1, 3, 7). The SHAPE decides the class; colour and texture (solid, stripes, checker, noise)
are drawn independently, so a detector has to learn shape and a self-supervised model sees
structure shared across images. Objects are small / medium / large in COCO's sense (area < 32^2,
< 96^2, >= 96^2; mostly medium and large, so a ViT/16 sees them as several patches), may leave the image, and occlude each other (later over earlier): every mask is
the *visible* part and ``area`` is its pixel count. A segmentation is stored as a polygon when a
polygon reproduces the visible mask exactly under pycocotools' rasteriser
(:mod:`demo_data.shapes`), otherwise (visible parts with holes) as compressed RLE. A few
``iscrowd=1`` RLE regions cover clusters of small shapes, as COCO's crowds do, and some images are
empty.

ADE part (``<root>/demo_ade/ADEChallengeData2016``, :mod:`demo_data.ade`): outdoor-like scenes
with stuff (sky, building, tree, grass, road, water) and things (ball, box), each class with its
own noisy texture family. Label 0 ("other", ignored in training) marks unlabelled clutter and, in
some images, thin bands along region borders, as in ADE20k.

Generation (:mod:`demo_data.cache`) takes a few seconds, writes into a temporary folder and renames
it into place when complete, with a ``DONE`` marker holding the generator version and parameters:
a dataset is regenerated only when that marker is missing or different. Same seed -> byte-identical
files. ``python -m demo_data --root DIR`` generates both.
"""

from demo_data.ade import DEMO_ADE_CLASSES
from demo_data.cache import DEMO_ROOT, MARKER_NAME, demo_root, ensure_demo_ade, ensure_demo_coco
from demo_data.classification import DEMO_CLS_CLASSES, ensure_demo_cls
from demo_data.cli import main
from demo_data.coco import DEMO_COCO_CATEGORIES
from demo_data.drawing import GENERATOR_VERSION, IMAGE_SIDES, OBJECT_TEXTURES

__all__ = [
    "DEMO_CLS_CLASSES",
    "ensure_demo_cls",
    "DEMO_ADE_CLASSES",
    "DEMO_COCO_CATEGORIES",
    "DEMO_ROOT",
    "GENERATOR_VERSION",
    "IMAGE_SIDES",
    "MARKER_NAME",
    "OBJECT_TEXTURES",
    "demo_root",
    "ensure_demo_ade",
    "ensure_demo_coco",
    "main",
]
