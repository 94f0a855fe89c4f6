"""Where a user's dataset comes from: a reference, read into the four raw arrays.

A reference is one of (see :func:`reference_kind` for how a string is told apart):

- a ``.npz`` file holding the arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``
  (read with ``numpy.load(allow_pickle=False)``: no pickled objects);
- a folder in torchvision's ``ImageFolder`` layout with ``train/`` and ``test/`` subfolders,
  one subfolder per class (``folder/train/cat/001.png``); class indices follow the train
  folder's sorted class names, all images must have one size, and grayscale ('L') images
  give one channel when all images are grayscale (otherwise every image is read as RGB);
- an import path ``package.module:factory``, ``factory()`` returning the four arrays (numpy
  arrays or torch tensors) as a tuple or list, or a mapping with those keys;
- a name in the entry-point group :data:`ENTRY_POINT_GROUP` (``annealbench.datasets``) of an
  installed package, loading a ``Dataset`` or a function returning the four arrays.

Readers return the arrays as given; :mod:`annealbench.data.arrays` checks and converts them.
:func:`stamp` is what tells an edited file from the one read before (mtime and size).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from annealbench.data.arrays import KEYS, listed
from annealbench.errors import DataError

ENTRY_POINT_GROUP = "annealbench.datasets"

# ``package.module:factory`` (the factory may be a dotted attribute: ``module:Class.make``).
_IDENTIFIERS = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
IMPORT_PATH = re.compile(rf"{_IDENTIFIERS}:{_IDENTIFIERS}")

PATH, IMPORT, NAME = "path", "import", "name"

FORMS = (
    "a .npz file of x_train, y_train, x_test, y_test; a folder with train/ and test/ "
    "subfolders of class folders (ImageFolder layout); or an import path module:function "
    "returning those four arrays"
)
NPZ_FIX = (
    "save the four arrays x_train, y_train, x_test, y_test with numpy.savez(path, "
    "x_train=..., y_train=..., x_test=..., y_test=...) or annealbench.data.save_npz"
)
RETURN_FIX = "return (x_train, y_train, x_test, y_test), or a dict with those four keys"


def reference_kind(ref: str) -> str:
    """PATH, IMPORT or NAME, from the string alone (and whether such a file exists).

    A path: an existing file or folder, or a string ending in ``.npz``, containing ``/``, or
    starting with ``.`` or ``~``. An import path: ``a.b.c:name`` of identifiers. Otherwise a
    name (a registered dataset, or an entry point).
    """
    try:
        exists = os.path.exists(os.path.expanduser(ref))
    except (OSError, ValueError):
        exists = False
    if exists or looks_like_path(ref):
        return PATH
    if IMPORT_PATH.fullmatch(ref):
        return IMPORT
    return NAME


def looks_like_path(ref: str) -> bool:
    """Whether ``ref`` is written as a path: it ends in ``.npz``, contains a path separator,
    or starts with ``.`` or ``~``."""
    separators = [sep for sep in ("/", os.sep, os.altsep) if sep]
    return (
        ref.endswith(".npz") or any(sep in ref for sep in separators) or ref.startswith((".", "~"))
    )


def absolute(ref: str) -> str:
    """A path reference made absolute and resolved (``~`` expanded)."""
    return str(Path(os.path.expanduser(ref)).resolve())  # an unknown ~user stays as it is


# ---------------------------------------------------------------------------------------------
# Stamps: what changes when the data does (a file's mtime and size).


def stamp(kind: str, source: str) -> tuple[Any, ...]:
    """A value that changes when the data at ``source`` is edited: a file's mtime and size,
    or a digest of those of every file under an ImageFolder folder. Imported factories and
    entry points are read once per process: ``()``."""
    if kind != PATH:
        return ()
    path = Path(source)
    if path.is_dir():
        digest = hashlib.sha256()
        for file, info in walk_files(path):
            digest.update(f"{file}\0{info.st_mtime_ns}\0{info.st_size}\n".encode())
        return ("folder", digest.hexdigest())
    try:
        info = path.stat()
    except OSError:
        raise missing(path) from None
    return ("file", info.st_mtime_ns, info.st_size)


def walk_files(folder: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(path relative to ``folder``, stat) of every file under it, in a fixed order."""
    for top, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(top, name)
            with contextlib.suppress(OSError):
                yield os.path.relpath(path, folder), os.stat(path)


def missing(path: Path) -> DataError:
    return DataError(
        f"{path}: no such file or folder; give the path of a .npz file or of a dataset folder "
        f"(relative paths are from the working directory, {Path.cwd()})"
    )


# ---------------------------------------------------------------------------------------------
# Reading: each kind of reference into the four raw arrays.


def describe(kind: str, source: str) -> str:
    """How messages name a source."""
    if kind == IMPORT:
        return f"import path {source}"
    if kind == NAME:
        return f"entry point {source!r} (group {ENTRY_POINT_GROUP})"
    return source


def read(kind: str, source: str) -> dict[str, Any]:
    """The four raw arrays of a source, by :data:`KEYS`."""
    if kind == IMPORT:
        return four(describe(kind, source), call(source, resolve(source)))
    if kind == NAME:
        found = load_entry_point(source)
        if not callable(found):
            raise DataError(
                f"{describe(kind, source)} loads a {type(found).__name__}, not a function; "
                f"point it at a Dataset or at a function that returns the four arrays"
            )
        return four(describe(kind, source), call(describe(kind, source), found))
    path = Path(source)
    if path.is_dir():
        return read_image_folder(path)
    if not path.exists():
        raise missing(path)
    return read_npz(path)


def read_npz(path: Path) -> dict[str, Any]:
    """The four arrays of a .npz file (no pickles)."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(
            f"{path} is not a readable .npz file ({type(error).__name__}: {error}); {NPZ_FIX}"
        ) from error
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(f"{path} holds a single array (a .npy file), not four; {NPZ_FIX}")
    with loaded:
        lacking = [key for key in KEYS if key not in loaded.files]
        if lacking:
            raise DataError(
                f"{path} lacks the arrays {', '.join(lacking)} (it has "
                f"{', '.join(loaded.files) or 'no arrays'}); {NPZ_FIX}"
            )
        try:
            return {key: loaded[key] for key in KEYS}
        except (OSError, ValueError, EOFError) as error:  # pickled objects, a truncated member
            raise DataError(
                f"{path}: its arrays could not be read ({type(error).__name__}: {error}); "
                f"{NPZ_FIX} (numeric arrays only: no Python objects)"
            ) from error


def four(where: str, result: Any) -> dict[str, Any]:
    """A factory's result as the four arrays by key."""
    if isinstance(result, Mapping):
        lacking = [key for key in KEYS if key not in result]
        if lacking:
            raise DataError(
                f"{where} returned a mapping without {', '.join(lacking)} (it has "
                f"{listed(list(result))}); {RETURN_FIX}"
            )
        return {key: result[key] for key in KEYS}
    if isinstance(result, tuple | list) and len(result) == len(KEYS):
        return dict(zip(KEYS, result, strict=True))
    size = f" of {len(result)} items" if isinstance(result, tuple | list) else ""
    raise DataError(f"{where} returned a {type(result).__name__}{size}; {RETURN_FIX}")


def call(where: str, factory: Callable[[], Any]) -> Any:
    """``factory()``; what it raises is a DataError naming it."""
    try:
        return factory()
    except Exception as error:
        raise DataError(
            f"{where}: calling it raised {type(error).__name__}: {error}; fix the function "
            f"(it is called with no arguments and returns the four arrays)"
        ) from error


# -- Import paths ------------------------------------------------------------------------------


def resolve(ref: str) -> Callable[[], Any]:
    """The function an import path ``module:attribute`` names."""
    module_name, _, attribute = ref.partition(":")
    found: Any = import_module(ref, module_name)
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            where = getattr(sys.modules.get(module_name), "__file__", None) or module_name
            raise DataError(
                f"import path {ref}: module {module_name} ({where}) has no attribute "
                f"{attribute!r}; name a function in it that returns the four arrays "
                f"(x_train, y_train, x_test, y_test)"
            ) from None
    if not callable(found):
        raise DataError(
            f"import path {ref}: {attribute} is a {type(found).__name__}, not a function; "
            f"name a function that returns the four arrays (x_train, y_train, x_test, y_test)"
        )
    return found


def import_module(ref: str, name: str) -> ModuleType:
    """Import ``name``; not found, it is tried once more from the working directory (which a
    console script's ``sys.path`` lacks)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if not is_the_module(error, name):
            raise import_failed(ref, name, error) from error
        retry = import_from_cwd(name)
        if retry is not None:
            return retry
        raise DataError(
            f"import path {ref}: cannot import module {name!r} ({error}); put the folder that "
            f"holds it on PYTHONPATH (export PYTHONPATH=/that/folder, which worker processes "
            f"inherit) or run from that folder"
        ) from error
    except Exception as error:  # the module itself fails: a syntax error, a missing package
        raise import_failed(ref, name, error) from error


def is_the_module(error: ModuleNotFoundError, name: str) -> bool:
    """Whether the module not found is ``name`` (or a package of it), not one it imports."""
    missing_name = error.name or ""
    return bool(missing_name) and (name == missing_name or name.startswith(missing_name + "."))


def import_from_cwd(name: str) -> ModuleType | None:
    """``name`` imported with fresh finder caches and the working directory on the path."""
    importlib.invalidate_caches()
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        return None
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(cwd)


def import_failed(ref: str, name: str, error: BaseException) -> DataError:
    return DataError(
        f"import path {ref}: importing {name} raised {type(error).__name__}: {error}; fix the "
        f"module (or install what it imports)"
    )


# -- Entry points ------------------------------------------------------------------------------


def entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The installed entry points of :data:`ENTRY_POINT_GROUP`, by name."""
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return {entry.name: entry for entry in found}


def load_entry_point(name: str) -> Any:
    """What the entry point ``name`` loads; a DataError if it is gone or fails to load."""
    entry = entry_points().get(name)
    if entry is None:
        raise DataError(
            f"{describe(NAME, name)} is no longer installed; reinstall the package that declares it"
        )
    try:
        return entry.load()
    except Exception as error:
        raise DataError(
            f"{describe(NAME, name)} = {entry.value} could not be loaded "
            f"({type(error).__name__}: {error}); fix or reinstall the package that declares it"
        ) from error


# -- ImageFolder -------------------------------------------------------------------------------


def read_image_folder(folder: Path) -> dict[str, Any]:
    """x (uint8 N×C×H×W) and y of ``folder/train`` and ``folder/test``."""
    splits = [folder / "train", folder / "test"]
    absent = [f"{split.name}/" for split in splits if not split.is_dir()]
    if absent:
        present = sorted(p.name for p in folder.iterdir())[:10]
        raise DataError(
            f"{folder} has no {' and no '.join(absent)} subfolder (it has "
            f"{listed(present) if present else 'nothing'}); lay it out as "
            f"{folder}/train/<class>/<image> and {folder}/test/<class>/<image> (or give a "
            f".npz file)"
        )
    train_samples, train_classes = image_samples(splits[0])
    test_samples, test_classes = image_samples(splits[1])
    if len(train_classes) < 2:
        raise DataError(
            f"{splits[0]} has {len(train_classes)} class folder ({listed(train_classes)}); a "
            f"classifier needs at least 2: one subfolder of images per class"
        )
    extra = sorted(set(test_classes) - set(train_classes))
    if extra:
        raise DataError(
            f"{splits[1]} has class folders {listed(extra)} that {splits[0]} lacks; give the "
            f"training split every class (or remove them from the test split)"
        )
    index = {name: i for i, name in enumerate(train_classes)}
    test_labels = [index[test_classes[label]] for _, label in test_samples]
    images = read_images([path for path, _ in train_samples + test_samples])
    return {
        "x_train": images[: len(train_samples)],
        "y_train": np.array([label for _, label in train_samples], dtype=np.int64),
        "x_test": images[len(train_samples) :],
        "y_test": np.array(test_labels, dtype=np.int64),
    }


def image_samples(split: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """(image path, class index) of one split, and its sorted class names, by torchvision's
    ``ImageFolder``; an empty class folder is a DataError naming it."""
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    try:
        found = ImageFolder(str(split), allow_empty=True)
    except FileNotFoundError:
        raise DataError(
            f"{split} has no class folders; put each class's images in a subfolder of it "
            f"({split}/<class>/<image>.png)"
        ) from None
    counts = Counter(label for _, label in found.samples)
    empty = [name for i, name in enumerate(found.classes) if counts[i] == 0]
    if empty:
        others = f" (nor do {listed(empty[1:])})" if len(empty) > 1 else ""
        raise DataError(
            f"{split / empty[0]} holds no images{others}; add images (of "
            f"{', '.join(IMG_EXTENSIONS)}) or remove the empty class folder"
        )
    return list(found.samples), list(found.classes)


def read_images(paths: list[str]) -> np.ndarray:
    """uint8 N×C×H×W: one channel if every image is grayscale ('L'), else RGB."""
    from PIL import Image

    pixels: list[np.ndarray] = []
    first: tuple[str, tuple[int, int]] | None = None
    for path in paths:
        try:
            with Image.open(path) as image:
                size = image.size
                pixels.append(np.asarray(image if image.mode == "L" else image.convert("RGB")))
        except (OSError, ValueError, SyntaxError) as error:  # PIL's errors for a bad file
            raise DataError(
                f"{path} is not a readable image ({type(error).__name__}: {error}); replace "
                f"or remove it"
            ) from error
        if first is None:
            first = (path, size)
        elif size != first[1]:
            (w, h), (w0, h0) = size, first[1]
            raise DataError(
                f"{path} is {w}×{h} pixels but {first[0]} is {w0}×{h0}; all images must have "
                f"one size: resize them (to {w0}×{h0}, say)"
            )
    if all(p.ndim == 2 for p in pixels):
        return np.stack(pixels)[:, None]
    rgb = [p if p.ndim == 3 else np.repeat(p[:, :, None], 3, axis=2) for p in pixels]
    return np.stack(rgb).transpose(0, 3, 1, 2)
