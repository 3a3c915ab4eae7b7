"""The mock galaxy population, its images and the SDSS-layout writer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import labelexplorer as le
from labelexplorer.exceptions import LabelExplorerError, ShapeError
from labelexplorer.mock import galaxies as gx


@pytest.fixture(scope="module")
def population():
    return gx.galaxy_population(12000, np.random.default_rng(20))


def _residual_scatter(table, columns):
    design = np.column_stack([np.ones(len(table))] + [np.asarray(c, float) for c in columns])
    coefficients, *_ = np.linalg.lstsq(design, table["oh_p50"].to_numpy(), rcond=None)
    return float(np.std(table["oh_p50"].to_numpy() - design @ coefficients))


# ---------------------------------------------------------------------------- population
def test_object_ids_are_unique_19_digit_sdss_like_strings(population):
    ids = population["objID"]
    assert ids.map(type).eq(str).all()
    assert ids.str.fullmatch(r"\d{19}").all() and ids.is_unique
    assert ids.str.startswith("1237").mean() > 0.99  # skyVersion 2, rerun 301, like real SDSS DR objIDs


def test_mass_metallicity_relation_follows_tremonti_with_010_dex_scatter(population):
    bins = np.arange(8.75, 11.5, 0.25)
    which = np.digitize(population["log_mstar"], bins)
    for k in range(1, bins.size):
        rows = population[which == k]
        if len(rows) < 100:
            continue
        expected = gx.tremonti_mzr(rows["log_mstar"].median())
        assert abs(rows["oh_p50"].median() - expected) < 0.05
    scatter = (population["oh_p50"] - gx.tremonti_mzr(population["log_mstar"])).std()
    assert 0.085 < scatter < 0.115
    assert population["log_mstar"].between(8.5, 11.5).all()
    assert 9.9 < population["log_mstar"].median() < 10.3


def test_morphology_carries_metallicity_that_photometry_does_not(population):
    mass = population["log_mstar"]
    photometry = [mass, mass ** 2, population["g"], population["r"], population["i"]]
    morphology = [np.log10(population["size"]), population["bulge_fraction"], population["axis_ratio"]]
    from_photometry = _residual_scatter(population, photometry)
    with_morphology = _residual_scatter(population, photometry + morphology)
    assert with_morphology < 0.88 * from_photometry  # ~0.081 against ~0.097 dex
    assert _residual_scatter(population, photometry + [population["oh_morph"]]) < 0.88 * from_photometry


def test_photometry_is_consistent_with_mass_distance_and_colour(population):
    assert population["r"].max() <= 17.77 + 1e-9  # the SDSS spectroscopic flux limit
    absolute = population["r"] - gx._distance_modulus(population["redshift"])
    assert np.corrcoef(absolute, population["log_mstar"])[0, 1] < -0.9
    colour = population["g"] - population["r"]
    assert np.corrcoef(colour, population["log_mstar"])[0, 1] > 0.3
    assert (population["g"] > population["r"]).all() and (population["r"] - population["i"]).between(-0.1, 0.8).all()
    assert 0.04 < population["redshift"].median() < 0.09 and population["redshift"].min() > 0.005
    median_size = population["size"].median()  # half-light radii in arcsec
    assert median_size > 1.5 and median_size < 4.0
    assert np.corrcoef(population["bulge_fraction"], population["log_mstar"])[0, 1] > 0.3


def test_population_is_deterministic_for_a_seed():
    first = gx.galaxy_population(50, np.random.default_rng(4))
    second = gx.galaxy_population(50, np.random.default_rng(4))
    pd.testing.assert_frame_equal(first, second)


# ---------------------------------------------------------------------------- images
def _one_galaxy(**changes):
    table = gx.galaxy_population(1, np.random.default_rng(0))
    base = dict(r=15.5, disk_re=4.0, bulge_re=1.0, bulge_fraction=0.05, axis_ratio=1.0, bulge_axis_ratio=1.0,
                position_angle=30.0, spiral_amplitude=0.0, seeing=1.3, sersic_bulge=4.0)
    for key, value in {**base, **changes}.items():
        table[key] = value
    return table


def _render_clean(tables):
    table = pd.concat(tables, ignore_index=True)
    images = gx.render_images(table, np.random.default_rng(1), neighbours=False, noise=False)
    return images.astype(float).sum(axis=-1)


def _moments(image):
    rows, cols = np.indices(image.shape)
    weight = np.where(image > 0.05 * image.max(), image, 0.0)
    total = weight.sum()
    y, x = (weight * rows).sum() / total, (weight * cols).sum() / total
    cxx = (weight * (cols - x) ** 2).sum() / total
    cyy = (weight * (rows - y) ** 2).sum() / total
    cxy = (weight * (cols - x) * (rows - y)).sum() / total
    eigen = np.linalg.eigvalsh([[cxx, cxy], [cxy, cyy]])
    angle = np.degrees(0.5 * np.arctan2(2 * cxy, cxx - cyy)) % 180.0
    return x, y, np.sqrt(eigen[0] / eigen[1]), angle


def test_images_have_the_sdss_cutout_shape_and_a_centred_galaxy():
    rng = np.random.default_rng(8)
    table = gx.galaxy_population(24, rng)
    images = gx.render_images(table, rng)
    assert images.shape == (24, 128, 128, 3) and images.dtype == np.uint8
    brightness = images.astype(float).sum(axis=-1)
    assert np.all(brightness[:, 60:68, 60:68].mean(axis=(1, 2)) > 3 * np.median(brightness, axis=(1, 2)))
    clean = gx.render_images(table, np.random.default_rng(8), neighbours=False, noise=False).astype(float).sum(-1)
    for image in clean:
        x, y, _, _ = _moments(image)
        assert abs(x - 63.5) < 2.0 and abs(y - 63.5) < 2.0
    small = gx.render_images(table.iloc[:3], np.random.default_rng(8), size=64)
    assert small.shape == (3, 64, 64, 3)


def test_axis_ratio_and_orientation_follow_inclination():
    ratios = np.array([0.2, 0.4, 0.6, 0.8, 1.0])
    images = _render_clean([_one_galaxy(axis_ratio=q) for q in ratios])
    measured = np.array([_moments(image)[2] for image in images])
    assert np.all(np.diff(measured) > 0)
    assert measured[0] < 0.45 and measured[-1] > 0.9
    assert abs(_moments(images[0])[3] - 30.0) < 5.0  # major axis along position_angle (from +x toward +y)


def test_bulge_dominated_galaxies_are_more_concentrated():
    images = _render_clean([_one_galaxy(bulge_fraction=b) for b in (0.02, 0.4, 0.9)])
    concentration = []
    for image in images:
        rows, cols = np.indices(image.shape)
        radius = np.hypot(rows - 63.5, cols - 63.5).ravel()
        order = np.argsort(radius)
        cumulative = np.cumsum(image.ravel()[order]) / image.sum()
        r50, r90 = np.interp([0.5, 0.9], cumulative, radius[order])
        concentration.append(r90 / r50)
    assert concentration[0] < concentration[1] < concentration[2]


def test_bulges_are_redder_than_disks():
    table = pd.concat([_one_galaxy(bulge_fraction=0.9, bulge_re=2.0), _one_galaxy(bulge_fraction=0.0)],
                      ignore_index=True)
    table["g_r_bulge"], table["g_r_disk"] = 0.8, 0.3
    images = gx.render_images(table, np.random.default_rng(2), neighbours=False, noise=False).astype(float)
    centre = images[:, 58:70, 58:70].mean(axis=(1, 2))
    red_to_blue = centre[:, 0] / centre[:, 2]
    assert red_to_blue[0] > 1.1 * red_to_blue[1]


def test_images_are_deterministic_for_a_seed():
    table = gx.galaxy_population(6, np.random.default_rng(9))
    np.testing.assert_array_equal(gx.render_images(table, np.random.default_rng(3)),
                                  gx.render_images(table, np.random.default_rng(3)))


@pytest.mark.realdata
def test_images_look_like_the_real_sdss_cutouts(real_data, tmp_path):
    from PIL import Image

    folder = real_data / "galaxies" / "sdss_gri_128"
    ids = pd.read_csv(folder / "train.csv", dtype={"objID": str})["objID"][:120]
    real = np.stack([np.asarray(Image.open(folder / "train" / f"{i}.jpg")) for i in ids])
    rng = np.random.default_rng(12)
    mock = gx.render_images(gx.galaxy_population(120, rng), rng)
    gx.write_galaxy_sample(tmp_path, pd.DataFrame({"objID": [str(k) for k in range(120)], "oh_p50": 9.0}), mock)
    mock = np.stack([np.asarray(Image.open(tmp_path / "train" / f"{k}.jpg")) for k in range(120)])  # as written

    def look(images):
        corners = np.concatenate([images[:, :16, :16], images[:, -16:, -16:]], axis=1).reshape(len(images), -1, 3)
        brightness = images.astype(float).mean(axis=-1)
        bright = images[brightness > 60].mean(axis=0)
        return dict(noise=np.median(corners.std(axis=1), axis=0), centre=images[:, 60:68, 60:68].mean(),
                    extent=np.median((brightness > 30).mean(axis=(1, 2))), hue=bright / bright.sum())

    real_look, mock_look = look(real), look(mock)
    np.testing.assert_allclose(mock_look["noise"], real_look["noise"], rtol=0.5)
    assert mock_look["centre"] == pytest.approx(real_look["centre"], rel=0.25)
    assert mock_look["extent"] == pytest.approx(real_look["extent"], rel=0.5)
    np.testing.assert_allclose(mock_look["hue"], real_look["hue"], atol=0.04)
    assert mock_look["hue"][0] > mock_look["hue"][1] > mock_look["hue"][2]  # yellowish: R > G > B


# ---------------------------------------------------------------------------- writer
def test_written_sample_reads_back_with_exact_object_ids(tmp_path):
    rng = np.random.default_rng(5)
    table = gx.galaxy_population(12, rng)
    images = gx.render_images(table, rng)
    train = gx.write_galaxy_sample(tmp_path / "sample", table, images)
    assert train == tmp_path / "sample" / "train"
    header = (tmp_path / "sample" / "train.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["objID", "oh_p50"] and {"log_mstar", "g", "r", "i", "inclination", "size"} <= set(header)
    image_set = le.read(train)
    assert list(image_set.ids) == list(table["objID"])  # 19-digit strings survive exactly
    assert image_set.images.shape == (12, 3, 128, 128)
    np.testing.assert_allclose(image_set.catalog["oh_p50"].to_numpy(), table["oh_p50"].to_numpy(), atol=1e-6)
    difference = np.abs(image_set.images.transpose(0, 2, 3, 1) * 255.0 - images)
    assert difference.mean() < 4.0  # JPEG quality 90


def test_rewriting_a_sample_replaces_it(tmp_path):
    rng = np.random.default_rng(6)
    first = gx.galaxy_population(3, rng)
    gx.write_galaxy_sample(tmp_path, first, gx.render_images(first, rng, size=32))
    second = gx.galaxy_population(2, rng)
    train = gx.write_galaxy_sample(tmp_path, second, gx.render_images(second, rng, size=32))
    assert sorted(p.stem for p in train.iterdir()) == sorted(second["objID"])


@pytest.mark.parametrize("change, error, words", [
    ("fewer-images", ShapeError, "one image per row"),
    ("float-images", ShapeError, "uint8"),
    ("duplicate-ids", LabelExplorerError, "unique"),
    ("no-metallicity", LabelExplorerError, "oh_p50"),
], ids=["fewer-images", "float-images", "duplicate-ids", "no-metallicity"])
def test_bad_writer_input_raises_and_leaves_existing_sample_intact(tmp_path, change, error, words):
    rng = np.random.default_rng(7)
    table = gx.galaxy_population(3, rng)
    images = gx.render_images(table, rng, size=32)
    gx.write_galaxy_sample(tmp_path, table, images)
    before = sorted(p.name for p in (tmp_path / "train").iterdir())
    bad_table, bad_images = table.copy(), images
    if change == "fewer-images":
        bad_images = images[:2]
    elif change == "float-images":
        bad_images = images.astype(float)
    elif change == "duplicate-ids":
        bad_table["objID"] = table["objID"].iloc[0]
    else:
        bad_table = table.drop(columns="oh_p50")
    with pytest.raises(error, match=words):
        gx.write_galaxy_sample(tmp_path, bad_table, bad_images)
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == before


@pytest.mark.parametrize("call, error, words", [
    (lambda: gx.galaxy_population(0, np.random.default_rng(0)), LabelExplorerError, "positive integer"),
    (lambda: gx.render_images(gx.galaxy_population(1, np.random.default_rng(0)), np.random.default_rng(0), size=3),
     ShapeError, "size"),
    (lambda: gx.render_images(pd.DataFrame({"r": [17.0]}), np.random.default_rng(0)), ShapeError, "bulge_fraction"),
], ids=["no-galaxies", "tiny-images", "missing-columns"])
def test_bad_arguments_raise_clear_errors(call, error, words):
    with pytest.raises(error, match=words):
        call()
