"""Python config files, typed dotted overrides and saving the resolved config."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path
from typing import Literal

import pytest

from engine.config import (
    ConfigError,
    OptimConfig,
    RunConfig,
    apply_overrides,
    config_to_dict,
    load_config,
    save_config,
)


@dataclasses.dataclass
class DataCfg:
    root: str = "/data"
    img_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    scales: tuple[int, ...] = (480, 512)
    subset: int | None = None
    flip: bool = True
    cache: Path = Path("cache")
    classes: tuple[str, ...] = ()


@dataclasses.dataclass
class ExpCfg:
    data: DataCfg = dataclasses.field(default_factory=DataCfg)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    method: Literal["splitmask", "beit", "mae"] = "splitmask"
    epochs: int = 10
    loss_weights: dict[str, float] = dataclasses.field(default_factory=dict)


def _write(path: Path, src: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(src))
    return path


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    d = tmp_path / "det_configs"
    _write(
        d / "base_3x.py",
        f"""
        from {__name__} import DataCfg, ExpCfg
        config = ExpCfg(data=DataCfg(root="/coco"), epochs=36)
        """,
    )
    _write(
        d / "derived_6x.py",
        """
        import dataclasses
        from base_3x import config as base
        config = dataclasses.replace(base, epochs=72)
        """,
    )
    return d


def test_load_by_name_path_and_composition(config_dir: Path) -> None:
    cfg = load_config("derived_6x", search_dirs=[config_dir])
    assert isinstance(cfg, ExpCfg)
    assert cfg.epochs == 72 and cfg.data.root == "/coco"
    assert load_config("derived_6x.py", [config_dir]) == cfg
    assert load_config(config_dir / "base_3x.py").epochs == 36


def test_same_file_names_in_two_folders_do_not_clash(tmp_path: Path) -> None:
    for name, epochs in (("a", 1), ("b", 2)):
        _write(
            tmp_path / name / "common.py",
            f"from {__name__} import ExpCfg\nconfig = ExpCfg(epochs={epochs})\n",
        )
        _write(tmp_path / name / "top.py", "from common import config\n")
    assert load_config(tmp_path / "a" / "top.py").epochs == 1
    assert load_config(tmp_path / "b" / "top.py").epochs == 2


def test_missing_config_lists_available(config_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("derived_9x", search_dirs=[config_dir])
    msg = str(info.value)
    assert "'derived_9x' not found" in msg
    assert "base_3x.py" in msg and "derived_6x.py" in msg


def test_bad_config_files(tmp_path: Path) -> None:
    no_cfg = _write(tmp_path / "empty.py", "x = 1\n")
    with pytest.raises(ConfigError, match="defines no module-level `config`"):
        load_config(no_cfg)
    not_dc = _write(tmp_path / "notdc.py", "config = {'lr': 1}\n")
    with pytest.raises(ConfigError, match="dataclass instance"):
        load_config(not_dc)
    broken = _write(tmp_path / "broken.py", "from does_not_exist_anywhere import config\n")
    with pytest.raises(ConfigError, match=r"broken\.py.*ModuleNotFoundError"):
        load_config(broken)
    typo = _write(
        tmp_path / "typo.py",
        f"from {__name__} import ExpCfg\nfrom engine.config import RunConfig\n"
        "config = ExpCfg(run=RunConfig(precision='bf61'))\n",
    )
    with pytest.raises(ConfigError, match=r"typo\.py: run\.precision: 'bf61' is not one of"):
        load_config(typo)


def test_typed_overrides() -> None:
    base = ExpCfg()
    cfg = apply_overrides(
        base,
        [
            "optim.lr=2e-4",
            "optim.betas=(0.9, 0.95)",
            "optim.layer_decay=0.65",
            "optim.clip_grad=none",
            "optim.milestones=27,33",
            "data.root=/data/coco",
            "data.img_size=1024",
            "data.scales=[480]",
            "data.subset=100",
            "data.flip=false",
            "data.mean=0,0,0",
            "data.cache=/tmp/c",
            "data.classes=cat, dog",
            "run.precision=bf16",
            "run.resume=auto",
            "run.allow_pickle=yes",
            "method='mae'",
            "epochs=1e2",
            "loss_weights={'mim': 1, 'nce': 0.5}",
        ],
    )
    assert cfg.optim.lr == 2e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == (0.9, 0.95)
    assert cfg.optim.layer_decay == 0.65 and cfg.optim.clip_grad is None
    assert cfg.optim.milestones == (27, 33)
    assert cfg.data == DataCfg(
        root="/data/coco",
        img_size=1024,
        mean=(0.0, 0.0, 0.0),
        scales=(480,),
        subset=100,
        flip=False,
        cache=Path("/tmp/c"),
        classes=("cat", "dog"),
    )
    assert isinstance(cfg.data.mean[0], float) and isinstance(cfg.data.scales, tuple)
    assert cfg.run.precision == "bf16" and cfg.run.resume == "auto" and cfg.run.allow_pickle is True
    assert cfg.method == "mae" and cfg.epochs == 100
    assert cfg.loss_weights == {"mim": 1.0, "nce": 0.5}
    assert base == ExpCfg()  # the input is not mutated
    assert apply_overrides(cfg, ["data.subset=null"]).data.subset is None


def test_unknown_key_lists_valid_keys_and_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(ExpCfg(), ["optim.lrr=1e-3"])
    msg = str(info.value)
    assert "unknown config key 'optim.lrr'" in msg
    assert "Did you mean 'optim.lr'" in msg
    for key in ("lr", "weight_decay", "betas", "layer_decay", "warmup_steps"):
        assert key in msg
    with pytest.raises(ConfigError) as info:
        apply_overrides(ExpCfg(), ["dta.root=/x"])
    assert "'data'" in str(info.value) and "data.*" in str(info.value) and "epochs" in str(info.value)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("epochs=abc", "epochs: expected an integer"),
        ("epochs=1.5", "epochs: expected an integer"),
        ("optim.lr=fast", "optim.lr: expected a number"),
        ("data.flip=maybe", "data.flip: expected true/false"),
        (
            "run.precision=fp8",
            r"run.precision: 'fp8' is not one of the choices \['auto', 'bf16', 'fp16', 'fp32'\]",
        ),
        ("optim.betas=(0.9,)", r"optim.betas: expected 2 values"),
        ("data=1", "data is a section"),
        ("epochs.x=1", "epochs is a value"),
        ("epochs", "must look like key=value"),
        ("optim.lr=-1", "optim.lr must be positive"),  # the dataclass's own validation
    ],
)
def test_bad_overrides(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        apply_overrides(ExpCfg(), [override])


def test_save_config_json_and_reloadable_py(tmp_path: Path) -> None:
    cfg = apply_overrides(ExpCfg(), ["optim.lr=3e-4", "data.subset=5", "loss_weights={'a': 2.0}"])
    path = save_config(cfg, tmp_path / "run")
    assert path == tmp_path / "run" / "config.json"
    data = json.loads(path.read_text())
    assert data == config_to_dict(cfg)
    assert data["optim"]["lr"] == 3e-4 and data["optim"]["betas"] == [0.9, 0.999]
    assert data["data"]["cache"] == "cache" and data["run"]["resume"] is None
    # the python form rebuilds exactly the same dataclasses (types included)
    assert load_config(tmp_path / "run" / "config.py") == cfg
