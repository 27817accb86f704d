"""20 Newsgroups through scikit-learn, online or from a local ``20news-bydate.tar.gz``.

For a local archive we build the very cache file scikit-learn's fetcher writes after a download
(``load_files(..., encoding="latin1")`` of the train and test folders, pickled and zlib-compressed)
in a private data home, then call ``fetch_20newsgroups(download_if_missing=False)`` on it. So the
texts, labels, label names, order, shuffling and ``remove`` cleaning are scikit-learn's own code,
not a re-implementation. The cache file's layout is a scikit-learn internal, stable since 0.20;
``scripts/check_20newsgroups.py`` verifies the equality against scikit-learn's own download path.
"""

from __future__ import annotations

import codecs
import logging
import os
import pickle
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sklearn.datasets import _twenty_newsgroups as sk20
from sklearn.datasets import fetch_20newsgroups, load_files

from rnnkit.data.cache import cache_root, fingerprint, path_identity
from rnnkit.data.corpus import TextDataset
from rnnkit.errors import DataError
from rnnkit.io import atomic_write_bytes

logger = logging.getLogger(__name__)

__all__ = ["load_20newsgroups"]

TRAIN_FOLDER = sk20.TRAIN_FOLDER  # "20news-bydate-train"
TEST_FOLDER = sk20.TEST_FOLDER  # "20news-bydate-test"
ARCHIVE_HINT = (
    "archive=PATH (data.archive in a config) to a local 20news-bydate.tar.gz or its extracted folder"
)


def load_20newsgroups(
    subset: str = "train",
    categories: Sequence[str] | None = None,
    remove: Sequence[str] = (),
    data_home: str | os.PathLike[str] | None = None,
    archive: str | os.PathLike[str] | None = None,
    shuffle: bool = True,
    random_state: int | None = 42,
    cache_dir: str | os.PathLike[str] | None = None,
) -> TextDataset:
    """Same arguments and result as ``sklearn.datasets.fetch_20newsgroups``, as a :class:`TextDataset`.

    Without ``archive`` scikit-learn downloads (or reuses its cache in ``data_home``). With
    ``archive`` nothing is downloaded: the archive is converted once into a cache keyed by its
    path, size and mtime, under ``data_home`` if given, else under rnnkit's cache folder.
    """
    if subset not in ("train", "test", "all"):
        raise DataError(f"subset must be 'train', 'test' or 'all', got {subset!r}")
    unknown = sorted(set(remove) - {"headers", "footers", "quotes"})
    if unknown:
        raise DataError(f"remove may only contain 'headers', 'footers', 'quotes'; got {unknown[0]!r}")
    if archive is not None:
        home = _archive_home(
            Path(archive).expanduser(), Path(data_home) if data_home else cache_root(cache_dir)
        )
        download = False
    else:
        home, download = data_home, True
    kwargs = {"data_home": home, "subset": subset, "shuffle": shuffle, "random_state": random_state}
    try:
        bunch = fetch_20newsgroups(
            **kwargs, categories=categories, remove=tuple(remove), download_if_missing=download
        )
    except ValueError:
        if categories is None:
            raise
        known = fetch_20newsgroups(**kwargs, download_if_missing=download).target_names
        missing = [c for c in categories if c not in known]
        raise DataError(f"unknown 20 Newsgroups categories {missing}; choose from {known}") from None
    except OSError as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DataError(f"cannot download 20 Newsgroups ({reason}); offline, pass {ARCHIVE_HINT}") from None
    return TextDataset(list(bunch.data), bunch.target, list(bunch.target_names))


def _archive_home(archive: Path, base: Path) -> Path:
    """A data home holding scikit-learn's cache file for ``archive``; built on first use."""
    if not archive.exists():
        raise DataError(f"20 Newsgroups archive not found: {archive}; pass {ARCHIVE_HINT}")
    home = base / "20newsgroups" / fingerprint(path_identity(archive))
    cache_file = Path(sk20._pkl_filepath(home, sk20.CACHE_NAME))
    if not cache_file.exists():
        logger.info("converting %s for scikit-learn into %s (once)", archive, home)
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=home) as tmp:
            folder = archive if archive.is_dir() else _extract(archive, Path(tmp))
            cache = {
                "train": load_files(_subfolder(folder, TRAIN_FOLDER, archive), encoding="latin1"),
                "test": load_files(_subfolder(folder, TEST_FOLDER, archive), encoding="latin1"),
            }
        atomic_write_bytes(cache_file, codecs.encode(pickle.dumps(cache), "zlib_codec"))
    return home


def _extract(archive: Path, target: Path) -> Path:
    try:
        with tarfile.open(archive, "r:*") as tar:
            # The "data" filter refuses absolute paths, links out of the folder and device files.
            tar.extractall(target, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DataError(f"cannot read 20 Newsgroups archive {archive}: {error}") from None
    return target


def _subfolder(folder: Path, name: str, archive: Path) -> str:
    path = folder / name
    if not path.is_dir():
        raise DataError(
            f"{archive} has no {name}/ folder; expected the 20news-bydate layout ({ARCHIVE_HINT})"
        )
    return str(path)
