"""The SDSS image reader on the 400 real cutouts, on small made-up folders, and on bad input."""

from __future__ import annotations

import csv
import shutil
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import labelexplorer as le
from labelexplorer.exceptions import FileFormatError, LabelExplorerError, ShapeError
from labelexplorer.io.images import is_image_source, read_sdss_images
from labelexplorer.io.registry import detect_format

GALAXIES = "galaxies/sdss_gri_128"
# 19-digit objIDs that a float64 cannot tell apart: they only survive as strings
CLOSE_IDS = ("1237648704043942145", "1237648704043942146", "1237648704043942147")


def _catalog_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def real_images(real_data):
    return read_sdss_images(real_data / GALAXIES / "train")


@pytest.mark.realdata
def test_all_400_real_cutouts_are_read_in_catalog_order_with_exact_ids(real_data, real_images):
    rows = _catalog_rows(real_data / GALAXIES / "train.csv")
    assert real_images.shape == (400, 3, 128, 128) and real_images.images.dtype == np.float32
    assert real_images.ids.tolist() == [row["objID"] for row in rows]
    assert all(len(i) == 19 for i in real_images.ids)
    assert real_images.catalog["objID"].tolist() == real_images.ids.tolist()
    np.testing.assert_allclose(real_images.catalog["oh_p50"], [float(row["oh_p50"]) for row in rows])
    assert 8.0 < real_images.catalog["oh_p50"].min() and real_images.catalog["oh_p50"].max() < 9.5
    assert real_images.meta["catalog"] == str(real_data / GALAXIES / "train.csv")


@pytest.mark.realdata
def test_real_pixels_are_the_jpeg_values_scaled_to_unit_range(real_data, real_images):
    pixels = real_images.images
    assert pixels.min() == 0.0 and 0.99 < pixels.max() <= 1.0
    assert 0.01 < pixels.mean() < 0.5  # galaxies on a dark sky
    first = real_images.ids[7]
    with Image.open(real_data / GALAXIES / "train" / f"{first}.jpg") as image:
        expected = np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255
    np.testing.assert_array_equal(pixels[7], expected)
    centre, edge = pixels[:, :, 56:72, 56:72].mean(), pixels[:, :, :16, :16].mean()
    assert centre > 3 * edge  # cutouts are centred on their galaxy


@pytest.mark.realdata
def test_the_folder_is_detected_and_read_through_labelexplorer_read(real_data):
    folder = real_data / GALAXIES / "train"
    assert detect_format(folder) == "sdss-images"
    assert detect_format(real_data / GALAXIES / "train.csv") == "sdss-images"  # its rows name the folder's images
    images = le.read(folder, size=16)
    assert isinstance(images, le.ImageSet) and images.shape == (400, 3, 16, 16)


@pytest.mark.realdata
@pytest.mark.parametrize("size", [32, 1], ids=lambda s: f"{s}px")
def test_rebinning_by_an_integer_factor_is_an_area_average(real_data, real_images, size):
    rebinned = read_sdss_images(real_data / GALAXIES / "train", size=size)
    factor = 128 // size
    expected = real_images.images.reshape(400, 3, size, factor, size, factor).mean(axis=(3, 5), dtype=np.float64)
    np.testing.assert_allclose(rebinned.images, expected, atol=1e-6)
    assert rebinned.ids.tolist() == real_images.ids.tolist()


@pytest.mark.realdata
def test_rebinning_by_a_fractional_factor_keeps_the_mean_brightness(real_data, real_images):
    rebinned = read_sdss_images(real_data / GALAXIES / "train.csv", size=50)
    assert rebinned.shape == (400, 3, 50, 50)
    np.testing.assert_allclose(rebinned.images.mean(axis=(2, 3)), real_images.images.mean(axis=(2, 3)), atol=0.01)


@pytest.mark.realdata
def test_a_single_image_is_joined_to_the_catalog_beside_its_folder(real_data, real_images):
    objid = real_images.ids[3]
    with pytest.warns(UserWarning, match="399 catalog rows have no image"):
        one = le.read(real_data / GALAXIES / "train" / f"{objid}.jpg")
    assert one.ids.tolist() == [objid]
    assert one.catalog["oh_p50"].iloc[0] == real_images.catalog["oh_p50"].iloc[3]


# ---------------------------------------------------------------------------- made-up folders
def _folder(tmp_path: Path, ids=CLOSE_IDS, mode="RGB", size=8, catalog_ids=None, name="train") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for value, objid in enumerate(ids):
        colour = {"RGB": (value * 40, 10, 200), "L": value * 40, "RGBA": (value * 40, 10, 200, 128)}[mode]
        Image.new(mode, (size, size), colour).save(folder / f"{objid}.png")
    if catalog_ids is not None:
        lines = ["objID,oh_p50"] + [f"{objid},{8.5 + 0.1 * k}" for k, objid in enumerate(catalog_ids)]
        (tmp_path / f"{name}.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_ids_that_differ_beyond_float_precision_stay_distinct(tmp_path):
    assert len({float(i) for i in CLOSE_IDS}) == 1
    images = read_sdss_images(_folder(tmp_path, catalog_ids=CLOSE_IDS[::-1]))
    assert images.ids.tolist() == list(CLOSE_IDS[::-1])
    assert images.catalog["oh_p50"].tolist() == pytest.approx([8.5, 8.6, 8.7])
    red = images.images[:, 0, 0, 0] * 255
    np.testing.assert_allclose(red, [80, 40, 0])  # each image found under its own id


def test_without_a_catalog_the_ids_are_the_sorted_file_stems(tmp_path):
    images = read_sdss_images(_folder(tmp_path))
    assert images.ids.tolist() == list(CLOSE_IDS) and images.catalog["objID"].tolist() == list(CLOSE_IDS)
    assert images.meta["catalog"] is None


def test_unmatched_images_and_rows_are_reported_and_the_join_is_inner(tmp_path):
    folder = _folder(tmp_path, catalog_ids=[CLOSE_IDS[1], "1237648704043949999"])
    with pytest.warns(UserWarning, match="1 catalog rows have no image and 2 images have no catalog row; "
                                         "keeping the 1"):
        images = read_sdss_images(folder)
    assert images.ids.tolist() == [CLOSE_IDS[1]]


@pytest.mark.parametrize("mode", ["L", "RGBA"], ids=["grayscale", "rgba"])
def test_non_rgb_images_are_converted_with_a_warning(tmp_path, mode):
    with pytest.warns(UserWarning, match="3 images were not RGB"):
        images = read_sdss_images(_folder(tmp_path, mode=mode))
    assert images.shape == (3, 3, 8, 8) and images.meta["converted_to_rgb"] == 3
    if mode == "L":  # gray copies into every channel
        np.testing.assert_array_equal(images.images[:, 0], images.images[:, 2])


def test_a_csv_naming_image_files_is_read(tmp_path):
    _folder(tmp_path)
    table = tmp_path / "list.csv"
    table.write_text("objID,file,mass\n" + "".join(f"{i},train/{i}.png,{k}\n" for k, i in enumerate(CLOSE_IDS[:2])))
    assert is_image_source(table) and detect_format(table) == "sdss-images"
    images = le.read(table)
    assert images.ids.tolist() == list(CLOSE_IDS[:2]) and images.catalog["mass"].tolist() == [0, 1]
    assert images.images[1, 0, 0, 0] * 255 == pytest.approx(40)  # the file the row names


def test_a_dataframe_catalog_with_integer_ids_joins_exactly(tmp_path):
    catalog = pd.DataFrame({"objid": np.array([int(i) for i in CLOSE_IDS], dtype=np.int64), "z": [0.1, 0.2, 0.3]})
    images = read_sdss_images(_folder(tmp_path), catalog=catalog)
    assert images.ids.tolist() == list(CLOSE_IDS) and images.catalog["z"].tolist() == [0.1, 0.2, 0.3]


def test_other_folders_and_csv_tables_are_not_claimed(tmp_path):
    (tmp_path / "spectra").mkdir()
    (tmp_path / "spectra" / "a.fits").write_bytes(b"SIMPLE  =")
    (tmp_path / "labels.csv").write_text("APOGEE_ID,TEFF\n2M1,5000\n")
    assert not is_image_source(tmp_path / "spectra") and not is_image_source(tmp_path / "labels.csv")


# ---------------------------------------------------------------------------- bad input
def _corrupt_jpeg(tmp_path, real_data):
    folder = tmp_path / "train"
    folder.mkdir()
    source = sorted((real_data / GALAXIES / "train").glob("*.jpg"))[0]
    shutil.copy(source, folder / source.name)
    broken = folder / "1237648704043942199.jpg"
    broken.write_bytes(source.read_bytes()[:300])
    return folder, {}, broken


def _not_an_image(tmp_path, real_data):
    folder = _folder(tmp_path)
    broken = folder / "1237648704043942100.jpg"
    broken.write_text("objID,oh_p50\n")
    return folder, {}, broken


def _empty_folder(tmp_path, real_data):
    folder = tmp_path / "train"
    folder.mkdir()
    (folder / "notes.txt").write_text("no images here")
    return folder, {"format": "sdss-images"}, folder


def _catalog_without_objid(tmp_path, real_data):
    folder = _folder(tmp_path)
    catalog = tmp_path / "train.csv"
    catalog.write_text("name,oh_p50\nNGC1,8.7\n")
    return folder, {}, catalog


def _float_objids(tmp_path, real_data):
    folder = _folder(tmp_path)
    catalog = tmp_path / "train.csv"
    catalog.write_text("objID,oh_p50\n1.237648704043942e+18,8.7\n")
    return folder, {}, catalog


def _no_match(tmp_path, real_data):
    folder = _folder(tmp_path, catalog_ids=["1237648704043949999"])
    return folder, {}, tmp_path / "train.csv"


def _different_sizes(tmp_path, real_data):
    folder = _folder(tmp_path)
    odd = folder / "1237648704043942188.png"
    Image.new("RGB", (16, 16)).save(odd)
    return folder, {}, odd


@pytest.mark.realdata
@pytest.mark.parametrize(("make", "error", "expected"), [
    (_corrupt_jpeg, FileFormatError, "expected a JPEG or PNG file"),
    (_not_an_image, FileFormatError, "expected a JPEG or PNG file"),
    (_empty_folder, FileFormatError, "holds no .jpg/.jpeg/.png images"),
    (_catalog_without_objid, FileFormatError, "expected a column 'objID'"),
    (_float_objids, FileFormatError, "loses digits"),
    (_no_match, FileFormatError, "no image file stem matches an objID"),
    (_different_sizes, ShapeError, "pass size=... to rebin"),
], ids=["corrupt-jpeg", "text-named-jpg", "folder-without-images", "catalog-without-objid", "objids-as-floats",
        "catalog-matches-no-image", "images-of-different-sizes"])
def test_bad_image_input_raises_errors_naming_the_file_and_expectation(tmp_path, real_data, make, error, expected):
    folder, options, culprit = make(tmp_path, real_data)
    with pytest.raises(error) as raised, pytest.warns(UserWarning) if make is _no_match else nullcontext():
        le.read(folder, **options)
    assert isinstance(raised.value, LabelExplorerError)
    assert str(culprit) in str(raised.value) and expected in str(raised.value)


def test_a_bad_size_is_refused(tmp_path):
    with pytest.raises(ShapeError, match="size: expected a positive integer"):
        read_sdss_images(_folder(tmp_path), size=0)
