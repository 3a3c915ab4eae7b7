"""make_universe end to end: everything written is read back by the project's own readers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

import labelexplorer as le
from labelexplorer.cli import main
from labelexplorer.exceptions import LabelExplorerError
from labelexplorer.labels import MISSING
from labelexplorer.mock import Universe, make_universe, population, regenerate_star
from labelexplorer.mock import universe as universe_module
from labelexplorer.mock.stellar import X_FE_LABELS

SMALL = dict(n_stars=300, n_spectra=40, seed=0, chunk_size=20, workers=1, progress=False)


@pytest.fixture(scope="module")
def universe(tmp_path_factory) -> Universe:
    return make_universe(tmp_path_factory.mktemp("universe"), n_galaxies=10, n_lamost=8, **SMALL)


def _bytes(universe: Universe, kind: str) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in universe.files(kind)}


def _tree(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_layout_and_manifest(universe):
    manifest = json.loads((universe.path / "universe.json").read_text())
    assert manifest["complete"] and manifest["done"] == manifest["tasks"]
    assert manifest["tasks"] == ["catalogs", "apogee-00000", "apogee-00001", "lamost-00000", "galaxies"]
    assert manifest["config"]["seed"] == 0 and manifest["version"] == le.__version__
    assert len(list((universe.path / "apStar").glob("apStar-*.fits"))) == 40
    assert len(list((universe.path / "aspcapStar").glob("aspcapStar-*.fits"))) == 40
    assert len(list((universe.path / "lamost").glob("spec-*.fits"))) == 8
    assert not list(universe.path.rglob("*.part"))
    assert "complete" in repr(universe)


def test_allstar_reads_back_with_the_written_labels(universe):
    table = le.read(universe.allstar_path)
    stars = universe.stars
    assert len(table) == 300 and table["APOGEE_ID"].tolist() == stars["APOGEE_ID"].tolist()
    for column in ("TEFF", "LOGG", "FE_H", "M_H", "ALPHA_M", *X_FE_LABELS, "SNR", "J", "H", "K"):
        written = stars[column].to_numpy(dtype=np.float32)
        expected = np.where(written <= -9000, np.nan, written)  # -9999 reads back as NaN
        np.testing.assert_array_equal(table[column].to_numpy(dtype=np.float32), expected, err_msg=column)
    assert table["MG_FE"].isna().any()  # some -9999 were written...
    assert np.isfinite(table["TRUE_MG_FE"]).all()  # ...but the truth is always there
    np.testing.assert_array_equal(table["TRUE_AL_FE"], stars["TRUE_AL_FE"].to_numpy(np.float32))
    assert table["STAR_CLASS"].tolist() == stars["STAR_CLASS"].tolist()
    assert table["CLUSTER"].tolist() == stars["CLUSTER"].tolist() == table["MEMBER"].tolist()
    assert table["HAS_SPECTRUM"].sum() == 40
    for column in ("GAIAEDR3_PHOT_G_MEAN_MAG", "GAIAEDR3_PHOT_BP_MEAN_MAG", "GAIAEDR3_PARALLAX", "NVISITS",
                   "ASPCAPFLAG", "STARFLAG", "TELESCOPE", "FIELD", "MOCK_INDEX"):
        assert column in table


def test_apstar_files_have_the_real_layout(universe):
    stars = universe.spectrum_stars
    for star, path in zip(stars.itertuples(), universe.files("apstar")):
        with fits.open(path) as hdul:
            assert len(hdul) == 4 and hdul[0].header["OBJID"] == star.APOGEE_ID
            assert hdul[0].header["NVISITS"] == star.NVISITS and hdul[1].header["CTYPE1"] == "LOG-LINEAR"
            expected = (8575,) if star.NVISITS == 1 else (star.NVISITS + 2, 8575)
            assert hdul[1].data.shape == hdul[2].data.shape == hdul[3].data.shape == expected
            assert hdul[3].data.dtype.kind == "i" and hdul[3].data.dtype.itemsize == 2
            hdul.verify("exception")
    assert {1, 2} <= set(stars["NVISITS"])


def test_apstar_headers_hold_the_velocities_of_night_time_visits(universe):
    for star, path in zip(universe.spectrum_stars.itertuples(), universe.files("apstar")):
        header = fits.getheader(path)
        assert header["VHELIO"] == pytest.approx(star.VHELIO_AVG, abs=1e-3)
        for visit in range(1, star.NVISITS + 1):
            bc = header[f"BC{visit}"]
            assert header[f"VRAD{visit}"] + bc == pytest.approx(header[f"VHELIO{visit}"], abs=1e-3)
            assert bc == pytest.approx(universe_module.barycentric_correction(star.RA, star.DEC,
                                                                              header[f"JD{visit}"] - 2400000.5), abs=1e-3)
            # observed at night, within ~2 months of opposition: the Sun 120-240 degrees from the star
            longitude, _ = universe_module._ecliptic(star.RA, star.DEC)
            elongation = (universe_module._sun_longitude(header[f"JD{visit}"] - 2400000.5) - longitude) % 360
            assert 110.0 < elongation < 290.0


def test_barycentric_correction_is_the_earths_orbital_velocity_towards_the_star():
    days = 57000.0 + np.arange(0.0, 365.25, 1.0)
    on_ecliptic = universe_module.barycentric_correction(90.0, 23.439, days)  # the ecliptic's northernmost point
    assert np.abs(on_ecliptic).max() == pytest.approx(29.8, abs=0.3)
    pole = universe_module.barycentric_correction(270.0, 66.561, days)  # the north ecliptic pole
    assert np.abs(pole).max() < 0.01
    # the Sun's longitude at the June solstice is 90: a star at opposition (longitude 270) has no
    # line-of-sight Earth motion, a star 90 degrees ahead of the Sun the full -29.8 km/s
    solstice = 57194.7  # 2015-06-21
    assert universe_module._sun_longitude(solstice) == pytest.approx(90.0, abs=0.3)
    assert universe_module.barycentric_correction(270.0, -23.439, solstice) == pytest.approx(0.0, abs=0.3)
    assert universe_module.barycentric_correction(180.0, 0.0, solstice) == pytest.approx(-29.8, abs=0.5)


def test_apstar_spectra_read_back_combined_and_visits(universe):
    stars = universe.spectrum_stars
    combined = universe.spectra("apstar")
    assert combined.ids.tolist() == stars["APOGEE_ID"].tolist()
    assert combined.flux.shape == (40, 8575)
    np.testing.assert_allclose(combined.info["snr"], stars["SNR"], rtol=1e-5)
    visits = universe.spectra("apstar", apstar_rows="visits")
    assert visits.n_spectra == stars["NVISITS"].sum()
    assert np.all(np.char.find(visits.ids.astype(str), "/visit") > 0)
    # noise: visits scatter around the combination more than the combination itself
    good = ~combined.mask
    assert np.median(combined.flux[good] / combined.error[good]) > 10


def test_aspcapstar_reads_back_with_labels_and_model(universe):
    stars = universe.spectrum_stars
    spectra = universe.spectra("aspcap")
    assert spectra.ids.tolist() == stars["APOGEE_ID"].tolist()
    for label in ("TEFF", "LOGG", "M_H", "ALPHA_M"):
        written = stars[label].to_numpy(np.float32)
        expected = np.where(written == MISSING, np.nan, written)
        np.testing.assert_array_equal(spectra.info[label].astype(np.float32), expected, err_msg=label)
    good = ~spectra.mask
    assert 0.9 < np.median(spectra.flux[good]) < 1.05  # continuum-normalised
    model = universe.spectra("model")
    residual = (spectra.flux - model.flux) / spectra.error
    assert 0.7 < np.nanstd(residual[good]) < 1.5  # the model is the noiseless truth: residuals are noise
    with fits.open(universe.files("aspcap")[0]) as hdul:
        table = hdul[4].data
        assert table["PARAM"].shape == (1, 9) and table["FPARAM"].shape == (1, 9)
        assert table["X_H"].shape == (1, 26) and table["ASPCAPFLAG"].shape == (1,)


def test_labels_follow_the_spectra(universe):
    spectra = universe.spectra("aspcap", rows=slice(5, 9))
    labels = universe.labels(rows=slice(5, 9))
    assert labels.index.tolist() == spectra.ids.tolist()
    np.testing.assert_array_equal(labels["MG_FE"], universe.spectrum_stars["TRUE_MG_FE"].iloc[5:9])
    pipeline = universe.labels(true=False)
    assert pipeline.isna().any().any() and not universe.labels().isna().any().any()
    errors = universe.label_errors()
    finite = errors.to_numpy()[np.isfinite(errors.to_numpy())]
    assert (finite > 0).all() and errors.isna().equals(pipeline.isna())
    by_id = universe.labels(rows=[labels.index[1], labels.index[0]])
    assert by_id.index.tolist() == [labels.index[1], labels.index[0]]
    assert universe.labels(all_stars=True).shape[0] == 300


def test_lamost_and_galaxies_read_back(universe):
    lamost = universe.lamost()
    catalog = universe.lamost_catalog()
    assert lamost.n_spectra == 8 and lamost.ids.tolist() == catalog["obsid"].astype(str).tolist()
    np.testing.assert_allclose(lamost.info["TEFF"], catalog["teff"], rtol=1e-5)
    assert (catalog["APOGEE_ID"].isin(universe.stars["APOGEE_ID"])).all()
    images = universe.images()
    assert images.images.shape == (10, 3, 128, 128)
    assert len(universe.galaxy_catalog()) == 10


def test_regenerated_star_equals_its_file(universe):
    star = universe.spectrum_stars.iloc[3]
    written = le.read(universe.files("apstar", rows=[3])[0], rows="all")
    again = regenerate_star(universe, star["APOGEE_ID"], rows="all")
    np.testing.assert_array_equal(again.flux, written.flux)
    np.testing.assert_array_equal(again.error, written.error)
    from_seed = regenerate_star(0, int(star["MOCK_INDEX"]), kind="aspcap")
    np.testing.assert_array_equal(from_seed.flux, universe.spectra("aspcap", rows=[3]).flux)
    model = universe.regenerate(int(star["MOCK_INDEX"]), kind="model")
    np.testing.assert_array_equal(model.flux, universe.spectra("model", rows=[3]).flux)


def test_resume_after_interruption_gives_the_uninterrupted_files(universe, tmp_path, monkeypatch):
    original = universe_module._write_apogee_chunk
    calls = []

    def stop_at_second_chunk(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(universe_module, "_write_apogee_chunk", stop_at_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        make_universe(tmp_path, n_galaxies=10, n_lamost=8, **SMALL)
    manifest = json.loads((tmp_path / "universe.json").read_text())
    assert manifest["done"] == ["catalogs", "apogee-00000"] and not manifest["complete"]
    assert len(list((tmp_path / "apStar").glob("*.fits"))) == 20
    assert not Universe(tmp_path).complete
    monkeypatch.setattr(universe_module, "_write_apogee_chunk", original)
    resumed = make_universe(tmp_path, n_galaxies=10, n_lamost=8, **SMALL)
    assert resumed.complete
    # same seed: every file (spectra, catalogs, JPEGs, manifest) is byte-identical to the uninterrupted run
    assert _tree(resumed.path) == _tree(universe.path)


def test_rerun_skips_done_work(universe, monkeypatch):
    def fail(*args):
        raise AssertionError("a finished chunk was written again")

    monkeypatch.setattr(universe_module, "_write_apogee_chunk", fail)
    again = make_universe(universe.path, n_galaxies=10, n_lamost=8, **SMALL)
    assert again.complete


def test_different_seed_gives_different_data(universe, tmp_path):
    other = make_universe(tmp_path, n_stars=300, n_spectra=5, seed=1, n_galaxies=0, n_lamost=0, progress=False,
                          workers=1)
    assert not np.allclose(other.stars["TRUE_TEFF"], universe.stars["TRUE_TEFF"])
    assert set(other.spectrum_stars["APOGEE_ID"]).isdisjoint(universe.spectrum_stars["APOGEE_ID"])


def test_two_worker_processes_write_the_same_files(universe, tmp_path):
    parallel = make_universe(tmp_path, n_galaxies=0, n_lamost=0, **{**SMALL, "workers": 2})
    assert _bytes(parallel, "aspcap") == _bytes(universe, "aspcap")


def test_command_line_writes_a_universe(tmp_path, capsys):
    status = main(["mock", "--out", str(tmp_path / "cli"), "--stars", "25", "--spectra", "2", "--galaxies", "0",
                   "--lamost", "0", "--seed", "3", "--workers", "1", "--quiet"])
    assert status == 0 and "Universe(" in capsys.readouterr().out
    assert Universe(tmp_path / "cli").stars["TRUE_TEFF"].equals(population(25, 3)["TRUE_TEFF"])
    assert main(["mock", "--out", str(tmp_path / "cli"), "--stars", "26", "--quiet"]) == 2  # a different universe


@pytest.mark.parametrize("arguments, message", [
    (dict(n_stars=0), "n_stars"),
    (dict(n_spectra=-1), "n_spectra"),
    (dict(seed=-2), "seed"),
    (dict(workers=0), "workers"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(n_spectra=1000), "n_spectra"),
], ids=["no-stars", "negative-spectra", "negative-seed", "no-workers", "empty-chunks", "more-spectra-than-stars"])
def test_bad_arguments_are_refused(tmp_path, arguments, message):
    settings = dict(n_stars=50, n_spectra=0, n_galaxies=0, n_lamost=0, progress=False) | arguments
    with pytest.raises(LabelExplorerError, match=message):
        make_universe(tmp_path / "u", **settings)
    assert not (tmp_path / "u" / "universe.json").exists()


def test_refuses_to_overwrite_other_data(universe, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(LabelExplorerError, match="not a mock universe"):
        make_universe(tmp_path, n_stars=20, n_spectra=0, n_galaxies=0, n_lamost=0, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(LabelExplorerError, match="different universe.*seed"):
        make_universe(universe.path, n_galaxies=10, n_lamost=8, **{**SMALL, "seed": 5})
    with pytest.raises(LabelExplorerError, match="not a mock universe"):
        Universe(tmp_path)


@pytest.mark.parametrize("call, message", [
    (lambda u: u.spectra("raw"), "unknown spectrum kind"),
    (lambda u: u.labels(rows=["2M99999999+9999999"]), "not among"),
    (lambda u: u.labels(rows=[10_000]), "positions"),
    (lambda u: u.labels(names=["NOT_A_LABEL"]), "unknown label"),
    (lambda u: regenerate_star(u, "2M00000000+0000000"), "not in"),
    (lambda u: regenerate_star(0, "2M00000000+0000000"), "index"),
    (lambda u: regenerate_star(u, 10_000), "outside"),
], ids=["unknown-kind", "unknown-id", "position-too-large", "unknown-label", "regenerate-unknown-id",
        "regenerate-id-without-universe", "regenerate-index-too-large"])
def test_bad_requests_name_the_problem(universe, call, message):
    with pytest.raises(LabelExplorerError, match=message):
        call(universe)
