"""The libraries that score COCO results: pycocotools / `lvis` (the reference) or faster-coco-eval.

`faster-coco-eval` (optional, `pip install faster-coco-eval`) reimplements COCOeval's matching and
accumulation in C++ and has an LVIS mode (`lvis_style=True`: federated negatives, not-exhaustive
categories, r / c / f groups). It is used only because its numbers equal the reference's:
`tests/test_det_eval_backends.py` asserts every statistic equal to 1e-4 on a synthetic set and on
the demo split, and `target-ssl-benchmark eval` measures both on the same files.

Backends: "pycocotools" (COCO: pycocotools, LVIS: `lvis`), "faster_coco_eval", or "auto" (the fast
one when it is installed, else the reference). Each runner returns the statistics as fractions in
[0, 1], -1 where a group has no ground truth (the libraries' convention), in the order of
`COCO_STATS` / `LVIS_STATS`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.util
import io
import logging
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from engine.errors import ConfigError

from .config import EVAL_BACKENDS as BACKENDS

__all__ = ["BACKENDS", "COCO_STATS", "LVIS_STATS", "resolve_backend", "coco_stats", "lvis_stats", "load_ground_truth"]

# COCOeval.stats, in order (maxDets = [1, 10, max_dets]).
COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR", "ARs", "ARm", "ARl")
# lvis.LVISEval.get_results() keys (AR at max_dets), in our names.
LVIS_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf", "AR", "ARs", "ARm", "ARl")
_LVIS_API_KEYS = dict(zip(LVIS_STATS, LVIS_STATS[:9] + ("AR@300", "ARs@300", "ARm@300", "ARl@300")))
_FASTER_KEYS = dict(zip(LVIS_STATS, ("AP_all", "AP_50", "AP_75", "AP_small", "AP_medium", "AP_large", "APr",
                                     "APc", "APf", "AR_all", "AR_small", "AR_medium", "AR_large")))

_log = logging.getLogger("target_ssl")


def faster_coco_eval_available() -> bool:
    return importlib.util.find_spec("faster_coco_eval") is not None


def resolve_backend(name: str) -> str:
    """"auto" -> "faster_coco_eval" if installed, else "pycocotools"; a named backend must be installed."""
    if name not in BACKENDS:
        raise ConfigError(f"eval.backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "auto":
        return "faster_coco_eval" if faster_coco_eval_available() else "pycocotools"
    if name == "faster_coco_eval" and not faster_coco_eval_available():
        raise ConfigError("eval.backend=faster_coco_eval but the package is not installed: "
                          "`pip install faster-coco-eval` (or set eval.backend=auto / pycocotools)")
    return name


def _quiet(*_args: Any, **_kwargs: Any) -> None:
    return None


_FASTER_GT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _faster_gt_of(gt: COCO) -> Any:
    """faster-coco-eval's index over the same dataset dict as `gt` (copied: it annotates the
    annotations it reads), built once per `gt`."""
    from faster_coco_eval import COCO as FasterCOCO

    if gt not in _FASTER_GT:
        _FASTER_GT[gt] = FasterCOCO(copy.deepcopy(gt.dataset), print_function=_quiet)
    return _FASTER_GT[gt]


@functools.lru_cache(maxsize=2)
def _faster_gt_file(path: str, _mtime_ns: int) -> Any:
    from faster_coco_eval import COCO as FasterCOCO

    return FasterCOCO(path, print_function=_quiet)


def load_ground_truth(kind: str, backend: str, gt_file: str | Path, coco: COCO) -> Any:
    """Load (and cache) the ground truth the way `backend` reads it for `kind` ("coco" / "lvis"):
    returns the `lvis.LVIS` to pass as `lvis_stats(lvis_gt=...)` for the reference LVIS backend, else
    None (faster-coco-eval's indexes are cached here, the reference COCO one is `coco` itself)."""
    backend = resolve_backend(backend)
    if backend == "faster_coco_eval":
        if kind == "lvis":
            _faster_gt_file(str(gt_file), Path(gt_file).stat().st_mtime_ns)
        else:
            _faster_gt_of(coco)
        return None
    if kind == "lvis":
        from lvis import LVIS

        return LVIS(str(gt_file))
    return None


def _faster_eval(gt: Any, dets: list[dict], iou_type: str, img_ids: Sequence[int] | None,
                 max_dets: list[int], lvis: bool, use_cats: bool = True) -> Any:
    from faster_coco_eval import COCOeval_faster

    ev = COCOeval_faster(gt, gt.loadRes(copy.deepcopy(dets)), iou_type, lvis_style=lvis, print_function=_quiet)
    ev.params.maxDets = max_dets
    ev.params.useCats = int(use_cats)
    if img_ids is not None:
        ev.params.imgIds = sorted(img_ids)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


def coco_stats(gt: COCO, dets: list[dict], iou_type: str, img_ids: Sequence[int] | None,
               max_dets: int, backend: str, use_cats: bool = True) -> list[float]:
    """The 12 COCOeval statistics (`COCO_STATS`) of `dets` (non-empty COCO results) against `gt`;
    `use_cats=False` matches detections to ground truth of any category (COCOeval's `useCats=0`)."""
    if resolve_backend(backend) == "faster_coco_eval":
        ev = _faster_eval(_faster_gt_of(gt), dets, iou_type, img_ids, [1, 10, max_dets], lvis=False, use_cats=use_cats)
        return [float(v) for v in ev.stats[:12]]
    with contextlib.redirect_stdout(io.StringIO()) as captured:
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(dets)), iou_type)
        ev.params.maxDets = [1, 10, max_dets]
        ev.params.useCats = int(use_cats)
        if img_ids is not None:
            ev.params.imgIds = sorted(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    _log.debug("COCOeval %s:\n%s", iou_type, captured.getvalue())
    stats = [float(v) for v in ev.stats]
    if max_dets != 100:
        # pycocotools' summarize takes AP (only stats[0]) at maxDets=100 whatever params.maxDets is,
        # which gives -1 otherwise: the same mean over (IoU, recall, class) at area "all", max_dets.
        precision = ev.eval["precision"][:, :, :, 0, -1]
        valid = precision[precision > -1]
        stats[0] = float(valid.mean()) if valid.size else -1.0
    return stats


@contextlib.contextmanager
def _numpy_float_alias() -> Iterator[None]:
    # lvis 0.5.3 (the latest release) calls `np.float`, removed in NumPy 1.24; provide the alias
    # (it was the builtin float) only while LVISEval runs.
    added = not hasattr(np, "float")
    if added:
        np.float = float  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if added:
            del np.float  # type: ignore[attr-defined]


def _top_per_image(dets: list[dict], max_dets: int) -> list[dict]:
    """The `max_dets` best-scored detections of each image (what `lvis.LVISResults` keeps)."""
    by_image: dict[int, list[dict]] = {}
    for d in dets:
        by_image.setdefault(d["image_id"], []).append(d)
    return [d for group in by_image.values() for d in sorted(group, key=lambda d: d["score"], reverse=True)[:max_dets]]


def lvis_stats(gt_path: str | Path, dets: list[dict], iou_type: str, img_ids: Sequence[int] | None,
               max_dets: int, backend: str, lvis_gt: Any | None = None) -> dict[str, float]:
    """The LVIS statistics (`LVIS_STATS`, AR at `max_dets`) of `dets` against the LVIS json `gt_path`.

    Args:
        lvis_gt: an already loaded `lvis.LVIS` of `gt_path` (the reference backend only).
    """
    if resolve_backend(backend) == "faster_coco_eval":
        gt = _faster_gt_file(str(gt_path), Path(gt_path).stat().st_mtime_ns)
        ev = _faster_eval(gt, _top_per_image(dets, max_dets), iou_type, img_ids, [max_dets], lvis=True)
        found = ev.stats_as_dict
        return {k: found[_FASTER_KEYS[k]] for k in LVIS_STATS}
    from lvis import LVIS, LVISEval, LVISResults

    gt = lvis_gt if lvis_gt is not None else LVIS(str(gt_path))
    ev = LVISEval(gt, LVISResults(gt, copy.deepcopy(dets), max_dets=max_dets), iou_type)
    if img_ids is not None:
        ev.params.img_ids = sorted(img_ids)
    ev.params.max_dets = max_dets
    with _numpy_float_alias():
        ev.run()
    res = ev.get_results()
    return {k: float(res[_LVIS_API_KEYS[k].replace("300", str(max_dets))]) for k in LVIS_STATS}
