"""Pascal VOC XML -> :class:`detsearch.datasets.detection.DetectionDataset`, and a real VOC sample.

Box convention. VOC ``bndbox`` values are 1-based pixel indices, both ends inclusive: the box
covers pixels ``xmin..xmax`` and ``ymin..ymax``. In the project's continuous coordinates
(pixel ``k`` of 1-based index ``k`` covers ``[k - 1, k)``) that region is::

    (ymin, xmin, ymax, xmax)_yxyx = (ymin - 1, xmin - 1, ymax, xmax)

so width is ``xmax - xmin + 1``, a box over the whole ``W x H`` image (``1, 1, W, H``) is
``(0, 0, H, W)``, and area is ``(xmax - xmin + 1) * (ymax - ymin + 1)``. This is the
``x - 1`` shift of the Detectron/py-faster-rcnn VOC readers, with the right/bottom edge taken
as the pixel's far side. Fractional values are accepted and shifted the same way.

Difficult objects. ``<difficult>1</difficult>`` becomes ``is_crowd=True``: COCO evaluation
then handles it as an ignore region (a detection matching it neither counts as a true nor a
false positive), as VOC's own evaluation ignores difficult objects. (COCO matches crowd
regions with ``intersection / detection area`` rather than IoU; that is the only difference.)

Ids. Image ids are 1, 2, ... over the xml files sorted by file name (then full path).
Category ids are 1..K in the order of ``class_names``, or of the sorted names found.

Real sample. :func:`fetch_deepforest_sample` copies the four aerial images with VOC XML that
the PyPI package ``deepforest==2.1.0`` ships under ``deepforest/data/``: from an installed copy
(``pip install --no-deps deepforest==2.1.0``; its files are read, the package is never imported),
else from its wheel, downloaded with pip when not given. Measured with this module: 4 images, 951 boxes (574 + 279 + 61 + 37,
one per ``<object>``, each with a ``<bndbox>``), 0 difficult; classes Tree 914, Dead 28,
Alive 9 (all three are trees).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import xml.etree.ElementTree as ElementTree
import zipfile
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from detsearch.datasets.detection import DatasetError, DetectionDataset, DetectionExample, check_box
from detsearch.datasets.paths import data_root
from detsearch.datasets.wheels import download_wheel

__all__ = ["DEEPFOREST_FILES", "default_deepforest_dir", "fetch_deepforest_sample", "load_voc"]

logger = logging.getLogger(__name__)

DEEPFOREST_REQUIREMENT = "deepforest==2.1.0"
DEEPFOREST_MEMBER_DIR = "deepforest/data/"
# The files fetch_deepforest_sample() extracts: each VOC xml and the image it names.
DEEPFOREST_FILES = {
    "2019_YELL_2_528000_4978000_image_crop2.xml":
        "bd431af6a5086d721eb731b22f5ea28cd8a8eab06883efc1c665391acbc68e11",
    "2019_YELL_2_528000_4978000_image_crop2.png":
        "a9bdb0f4447fdd899d22f567e0e20ba8320c5413b2ad0cd0ac8d9f3b6e0f9767",
    "2019_YELL_2_541000_4977000_image_crop.xml":
        "cefe4b96888bacbf8af1674f000082e549aa707aa6590d545effb23e43f26631",
    "2019_YELL_2_541000_4977000_image_crop.png":
        "178e58a23cc2642226a364a30f71bd9258ddc1b012c826f12250914a90c7a131",
    "OSBS_029.xml": "1f68c4011d7b351c29ca755072e77f3d16e6fd1f995bd05a9dd4eb952b55373c",
    "OSBS_029.tif": "8521dbb5e8063d37d61895867dfcca7476491d1345103dc1b3fd96f71b186353",
    "SOAP_061.xml": "4833280af75fd9c47965a93e38945282835e9e725cac412bdb9469d63480947c",
    "SOAP_061.png": "256508f1a62149bec4a80879077a865caf50e8cace095e6564c76befa480d424",
}


# ---------------------------------------------------------------------------
# Parsing.
# ---------------------------------------------------------------------------


def _text(element: ElementTree.Element | None, tag: str) -> str | None:
    child = None if element is None else element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        return None
    return child.text.strip()


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _parse_xml(path: Path) -> dict[str, Any]:
    """Parses one VOC file into a record with raw object names (ids are assigned later)."""
    try:
        root = ElementTree.parse(path).getroot()
    except FileNotFoundError:
        raise DatasetError(f"{path}: VOC xml file not found") from None
    except (OSError, ElementTree.ParseError) as exc:
        raise DatasetError(f"{path}: not a readable XML file ({exc})") from exc
    if root.tag != "annotation":
        raise DatasetError(f"{path}: root element <{root.tag}>, expected <annotation>")
    file_name = _text(root, "filename")
    if file_name is None:
        raise DatasetError(f"{path}: missing <filename>")
    size = root.find("size")
    if size is None:
        raise DatasetError(f"{path}: missing <size>")
    dims = {}
    for key in ("height", "width"):
        text = _text(size, key)
        value = _number(text)
        if value is None or value <= 0 or value != int(value):
            raise DatasetError(f"{path}: <size><{key}> is {text!r}, not a positive integer")
        dims[key] = int(value)

    names, boxes, difficult, areas = [], [], [], []
    for index, obj in enumerate(root.findall("object")):
        name = _text(obj, "name")
        where = f"{path}: object {index}" + ("" if name is None else f" ({name})")
        if name is None:
            raise DatasetError(f"{where}: missing <name>")
        difficult_text = _text(obj, "difficult") or "0"
        if difficult_text not in ("0", "1"):
            raise DatasetError(f"{where}: <difficult> is {difficult_text!r}, expected 0 or 1")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetError(f"{where}: missing <bndbox>")
        coords = {}
        for key in ("xmin", "ymin", "xmax", "ymax"):
            text = _text(bndbox, key)
            coords[key] = _number(text)
            if coords[key] is None:
                raise DatasetError(f"{where}: <bndbox><{key}> is {text!r}, not a number")
        box = (coords["ymin"] - 1.0, coords["xmin"] - 1.0, coords["ymax"], coords["xmax"])
        check_box(box, dims["height"], dims["width"],
                  f"{where} [bndbox xmin={coords['xmin']:g} ymin={coords['ymin']:g} "
                  f"xmax={coords['xmax']:g} ymax={coords['ymax']:g}]")
        names.append(name)
        boxes.append(box)
        difficult.append(difficult_text == "1")
        areas.append((box[2] - box[0]) * (box[3] - box[1]))
    return {"file_name": file_name, **dims, "names": names, "boxes": boxes,
            "is_crowd": difficult, "areas": areas}


def _xml_files(source: Any, image_dir: Any) -> tuple[list[Path], Path]:
    """Resolves ``source`` into sorted xml paths and the image directory."""
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if root.is_dir():
            annotations = root / "Annotations"
            if annotations.is_dir():  # The VOCdevkit layout.
                xml_dir, default_image_dir = annotations, root / "JPEGImages"
            else:
                xml_dir, default_image_dir = root, root
            paths = list(xml_dir.glob("*.xml"))
            if not paths:
                raise DatasetError(f"{xml_dir}: empty dataset (no .xml files)")
        elif root.is_file():
            paths, default_image_dir = [root], root.parent
        else:
            raise DatasetError(f"{root}: no such VOC directory or xml file")
    else:
        paths = [Path(p) for p in source]
        if not paths:
            raise DatasetError("empty dataset: the list of VOC xml files is empty")
        parents = sorted({p.parent for p in paths})
        default_image_dir = parents[0]
        if image_dir is None and len(parents) > 1:
            raise DatasetError(
                f"VOC xml files lie in {len(parents)} directories ({parents[0]}, {parents[1]}, "
                "...); pass image_dir"
            )
    paths.sort(key=lambda p: (p.name, str(p)))
    return paths, Path(image_dir) if image_dir is not None else default_image_dir


def load_voc(
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    image_dir: str | os.PathLike[str] | None = None,
    class_names: Sequence[str] | None = None,
    check_images: bool = True,
) -> DetectionDataset:
    """Loads Pascal VOC XML annotations.

    Args:
        source: A directory (a VOCdevkit year directory with ``Annotations/``, whose images
            default to ``JPEGImages/``; otherwise a directory holding ``*.xml`` files), one xml
            file, or a list of xml files.
        image_dir: Directory of the images named by ``<filename>``. None: ``JPEGImages/`` in
            the VOCdevkit layout, otherwise the directory of the xml files.
        class_names: Category names in id order (ids 1..K). None: the sorted names found.
        check_images: Require every image file to exist (only existence is checked; the
            image size is the xml's ``<size>``, which
            :func:`detsearch.models.pipeline.write_records` writes as Model Garden's converter does).

    Returns:
        The dataset; box convention, difficult handling and ids in the module docstring.

    Raises:
        DatasetError: Naming the xml file (and object index): no xml files, unparseable XML,
            missing ``<filename>``/``<size>``/``<name>``/``<bndbox>``, non-numeric size or
            coordinates, a box of zero or negative size or outside the image by more than
            one pixel, a name not in ``class_names``, duplicate ``class_names``, a missing
            image file.
    """
    paths, image_dir = _xml_files(source, image_dir)
    records = [(path, _parse_xml(path)) for path in paths]
    if class_names is None:
        names = sorted({name for _, record in records for name in record["names"]})
    else:
        names = [str(name) for name in class_names]
        if len(set(names)) != len(names):
            raise DatasetError(f"class_names has duplicates: {names}")
    category_ids = {name: index + 1 for index, name in enumerate(names)}

    examples = []
    for image_id, (path, record) in enumerate(records, start=1):
        classes = []
        for index, name in enumerate(record.pop("names")):
            if name not in category_ids:
                raise DatasetError(
                    f"{path}: object {index} ({name}): class name not in class_names {names}"
                )
            classes.append(category_ids[name])
        if check_images and not (image_dir / record["file_name"]).is_file():
            raise DatasetError(f"{path}: image file {image_dir / record['file_name']} not found")
        try:
            examples.append(DetectionExample(image_id=image_id, classes=classes, **record))
        except DatasetError as exc:  # e.g. a size so large that float32 boxes overflow
            raise DatasetError(f"{path}: {exc}") from None
    categories = tuple({"id": category_ids[name], "name": name} for name in names)
    try:
        return DetectionDataset(tuple(examples), categories, image_dir)
    except DatasetError as exc:  # checks over the float32 boxes; the message names the image
        raise DatasetError(f"{paths[0] if len(paths) == 1 else image_dir}: {exc}") from None


# ---------------------------------------------------------------------------
# The deepforest sample.
# ---------------------------------------------------------------------------


def default_deepforest_dir() -> Path:
    """``deepforest`` under `detsearch.datasets.paths.data_root` (``$DETSEARCH_DATA_DIR``, else ``./data``)."""
    return data_root() / "deepforest"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download_wheel(directory: Path) -> Path:
    return download_wheel(DEEPFOREST_REQUIREMENT, directory, DatasetError)


def _installed_sample() -> Path | None:
    """``deepforest/data/`` of an installed ``deepforest==2.1.0`` holding every sample file, found
    through the distribution's metadata (the package is not imported); None otherwise."""
    name, version = DEEPFOREST_REQUIREMENT.split("==")
    try:
        distribution = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    directory = Path(str(distribution.locate_file(DEEPFOREST_MEMBER_DIR)))
    if distribution.version != version or not all((directory / n).is_file() for n in DEEPFOREST_FILES):
        return None
    return directory


def _complete(data_dir: Path) -> bool:
    return all((data_dir / name).is_file() for name in DEEPFOREST_FILES)


def fetch_deepforest_sample(
    data_dir: str | os.PathLike[str] | None = None,
    wheel: str | os.PathLike[str] | None = None,
) -> Path:
    """Returns a directory with the deepforest VOC sample, extracting it when missing.

    The four xml files and the images they name (:data:`DEEPFOREST_FILES`) come from
    ``deepforest==2.1.0``: its wheel ``wheel`` if given, else the files of an installed
    ``deepforest==2.1.0`` (read, never imported), else a wheel fetched with
    ``python -m pip download --no-deps``. Each file is checked against its pinned sha256, then
    moved into place with ``os.replace``; the set counts as present only when all eight files
    are there. Load it with ``load_voc(fetch_deepforest_sample())``.

    Args:
        data_dir: Target directory; None means :func:`default_deepforest_dir`.
        wheel: Optional local path of the wheel; given, it is read even where the package is
            installed.

    Returns:
        ``data_dir`` as a Path (flat: xml files beside their images).

    Raises:
        DatasetError: The files cannot be obtained or read, or a file's sha256 differs.
    """
    data_dir = default_deepforest_dir() if data_dir is None else Path(data_dir)
    if _complete(data_dir):
        return data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".deepforest-", dir=data_dir) as tmp:
        tmp_dir = Path(tmp)
        installed = _installed_sample() if wheel is None else None
        if installed is not None:
            source = f"installed {DEEPFOREST_REQUIREMENT} ({installed})"
            try:
                for name in DEEPFOREST_FILES:
                    shutil.copyfile(installed / name, tmp_dir / name)
            except OSError as exc:
                raise DatasetError(f"{source}: cannot copy the VOC sample ({exc})") from exc
        else:
            wheel_path = Path(wheel) if wheel is not None else _download_wheel(tmp_dir)
            source = f"wheel {wheel_path}"
            try:
                with zipfile.ZipFile(wheel_path) as archive:
                    for name in DEEPFOREST_FILES:
                        (tmp_dir / name).write_bytes(archive.read(DEEPFOREST_MEMBER_DIR + name))
            except (OSError, KeyError, zipfile.BadZipFile) as exc:
                raise DatasetError(f"{source}: cannot extract the VOC sample ({exc})") from exc
        for name, expected in DEEPFOREST_FILES.items():
            digest = _sha256(tmp_dir / name)
            if digest != expected:
                raise DatasetError(f"{source}: {name} has sha256 {digest}, expected {expected}")
        for name in DEEPFOREST_FILES:
            os.replace(tmp_dir / name, data_dir / name)
    logger.info("Extracted the deepforest VOC sample into %s", data_dir)
    return data_dir
