"""20 Newsgroups from a local archive: identical to scikit-learn, offline errors that help.

scikit-learn is fed the same archive through its own download path (only the network fetch is
replaced by a copy of the file), so extraction, load_files, cleaning and shuffling are its own.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from sklearn.datasets import _twenty_newsgroups as sk20
from sklearn.datasets import fetch_20newsgroups

from rnnkit.config import Config
from rnnkit.data import load_20newsgroups, prepare_data
from rnnkit.errors import DataError


@pytest.fixture(autouse=True)
def _no_cache_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RNNKIT_CACHE", raising=False)


GROUPS = ("alt.atheism", "comp.graphics", "sci.space")
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "20news-sample.tar.gz"


def _post(group: str, number: int) -> bytes:
    body = f"Post {number} about {group.split('.')[-1]} and caf\xe9 stuff.\r\n"
    return (
        f"From: user{number}@example.com\nSubject: {group} {number}\nLines: 5\n\n"
        f"In article <{number}@x> someone writes:\n> quoted line\n{body}"
        "More words here.\n\n--\nSignature line\n"
    ).encode("latin-1")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny archive with the 20news-bydate layout, latin-1 bytes and CRLF included."""
    root = tmp_path_factory.mktemp("news")
    number = 100
    for part, count in (("20news-bydate-train", 4), ("20news-bydate-test", 2)):
        for group in GROUPS:
            folder = root / part / group
            folder.mkdir(parents=True)
            for _ in range(count):
                number += 1
                (folder / str(number)).write_bytes(_post(group, number))
    path = root / "20news-bydate.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for part in ("20news-bydate-train", "20news-bydate-test"):
            tar.add(root / part, arcname=part)
    return path


def _sklearn(archive: Path, data_home: Path, **kwargs):
    """scikit-learn's own download path, with the network replaced by a copy of ``archive``."""

    def fake_fetch(remote, dirname=None, n_retries=3, delay=1):
        target = Path(dirname) / remote.filename
        shutil.copyfile(archive, target)
        return str(target)

    with mock.patch.object(sk20, "_fetch_remote", fake_fetch):
        return fetch_20newsgroups(data_home=str(data_home), **kwargs)


@pytest.fixture(scope="module")
def sklearn_sample(tmp_path_factory: pytest.TempPathFactory):
    """scikit-learn's own loader of the shipped sample (its cache is built once per module)."""
    home = tmp_path_factory.mktemp("sklearn")
    return lambda **kwargs: _sklearn(SAMPLE, home, **kwargs)


@pytest.mark.parametrize("subset", ["train", "test", "all"])
@pytest.mark.parametrize(
    "remove", [(), ("headers",), ("footers",), ("quotes",), ("headers", "footers", "quotes")]
)
def test_the_shipped_sample_loads_exactly_what_sklearn_loads(
    sklearn_sample, subset: str, remove: tuple
) -> None:
    ours = load_20newsgroups(subset, remove=remove, archive=SAMPLE)
    theirs = sklearn_sample(subset=subset, remove=remove)
    assert ours.texts == theirs.data
    assert np.array_equal(ours.labels, theirs.target)
    assert ours.label_names == theirs.target_names


@pytest.mark.parametrize(
    ("categories", "seed"), [(["sci.space", "comp.graphics"], 7), (["rec.sport.hockey"], None)]
)
def test_the_sample_with_categories_and_seeds_matches_sklearn(sklearn_sample, categories, seed) -> None:
    kwargs = {"subset": "all", "categories": categories, "remove": ("quotes",)}
    if seed is None:  # an unshuffled corpus: scikit-learn's own order
        ours, theirs = (
            load_20newsgroups(**kwargs, shuffle=False, archive=SAMPLE),
            sklearn_sample(**kwargs, shuffle=False),
        )
    else:
        ours = load_20newsgroups(**kwargs, random_state=seed, archive=SAMPLE)
        theirs = sklearn_sample(**kwargs, random_state=seed)
    assert ours.texts == theirs.data and ours.label_names == theirs.target_names
    assert np.array_equal(ours.labels, theirs.target)


@pytest.mark.parametrize("subset", ["train", "test", "all"])
@pytest.mark.parametrize("remove", [(), ("headers",), ("headers", "footers", "quotes")])
def test_archive_loads_exactly_what_sklearn_loads(
    archive: Path, tmp_path: Path, subset: str, remove: tuple
) -> None:
    ours = load_20newsgroups(subset, remove=remove, archive=archive)
    theirs = _sklearn(archive, tmp_path / "sklearn", subset=subset, remove=remove)
    assert ours.texts == theirs.data
    assert np.array_equal(ours.labels, theirs.target)
    assert ours.label_names == theirs.target_names == list(GROUPS)


def test_categories_and_unshuffled_order_match_sklearn(archive: Path, tmp_path: Path) -> None:
    kwargs = {"subset": "train", "categories": ["sci.space", "alt.atheism"], "shuffle": False}
    ours = load_20newsgroups(**kwargs, archive=archive)
    theirs = _sklearn(archive, tmp_path / "sklearn", **kwargs)
    assert ours.texts == theirs.data and ours.label_names == ["alt.atheism", "sci.space"]
    assert np.array_equal(ours.labels, theirs.target)


def test_an_extracted_folder_works_like_the_archive(archive: Path, tmp_path: Path) -> None:
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "extracted", filter="data")
    from_folder = load_20newsgroups("test", archive=tmp_path / "extracted")
    from_archive = load_20newsgroups("test", archive=archive)
    assert from_folder.texts == from_archive.texts


def test_texts_are_read_as_latin1_like_sklearn(archive: Path) -> None:
    data = load_20newsgroups("train", archive=archive)
    assert all("café" in text for text in data.texts)


def test_without_an_archive_scikit_learns_download_gives_the_same_corpus(tmp_path: Path) -> None:
    def download(remote, dirname=None, n_retries=3, delay=1):
        target = Path(dirname) / remote.filename
        shutil.copyfile(SAMPLE, target)
        return str(target)

    kwargs = {"subset": "all", "remove": ("headers", "footers", "quotes"), "categories": ["sci.space"]}
    with mock.patch.object(sk20, "_fetch_remote", download):
        downloaded = load_20newsgroups(**kwargs, data_home=tmp_path)
    from_archive = load_20newsgroups(**kwargs, archive=SAMPLE)
    assert downloaded.texts == from_archive.texts and downloaded.label_names == from_archive.label_names
    assert np.array_equal(downloaded.labels, from_archive.labels)


def test_offline_without_archive_fails_with_one_line_naming_the_archive_option(tmp_path: Path) -> None:
    def no_network(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    with mock.patch.object(sk20, "_fetch_remote", no_network), pytest.raises(DataError) as error:
        load_20newsgroups("train", data_home=tmp_path)
    assert "archive=" in str(error.value) and "\n" not in str(error.value)


def test_unknown_category_is_a_data_error_listing_the_known_ones(archive: Path) -> None:
    with pytest.raises(DataError, match=r"sci\.spice"):
        load_20newsgroups("train", categories=["sci.spice"], archive=archive)


def test_a_file_that_is_not_an_archive_is_a_data_error(tmp_path: Path) -> None:
    bogus = tmp_path / "20news-bydate.tar.gz"
    bogus.write_bytes(b"not a tar file")
    with pytest.raises(DataError, match="cannot read"):
        load_20newsgroups("train", archive=bogus)


def test_prepare_data_splits_bydate_with_a_validation_part_from_train(archive: Path, tmp_path: Path) -> None:
    cfg = Config()
    cfg.data.archive, cfg.data.cache_dir, cfg.data.min_freq, cfg.data.val_size = (
        str(archive),
        str(tmp_path),
        1,
        0.25,
    )
    data = prepare_data(cfg)
    assert (len(data.train), len(data.validation), len(data.test)) == (9, 3, 6)
    assert sorted(np.bincount(data.validation.labels)) == [1, 1, 1]  # stratified
    assert data.label_names == list(GROUPS)


def test_random_split_pools_everything_like_the_seed_article(archive: Path, tmp_path: Path) -> None:
    cfg = Config()
    cfg.data.archive, cfg.data.cache_dir, cfg.data.split, cfg.data.val_size = (
        str(archive),
        str(tmp_path),
        "random",
        0,
    )
    data = prepare_data(cfg)
    assert (len(data.train), len(data.test)) == (14, 4)  # 18 posts, 20 % held out
