"""The demo pipeline and the ``demo`` / ``serve`` commands (no browser)."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from labelexplorer.cli import main
from labelexplorer.dashboard import demo as demo_module
from labelexplorer.dashboard.demo import Recipe, build_demo, demo_catalog
from labelexplorer.dashboard.state import catalog_sources
from labelexplorer.exceptions import LabelExplorerError, UnknownNameError

TINY = dict(n_stars=200, n_spectra=24, n_galaxies=0, workers=1)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    lines = []
    return out, build_demo(out, models=["ridge"], log=lines.append, **TINY), lines


def test_demo_catalog_holds_every_star_truth_pipeline_and_predictions(built):
    _, demo, _ = built
    catalog = demo.catalog
    assert len(catalog) == 200 and catalog["ID"].is_unique
    assert catalog_sources(catalog.columns) == ["ridge", "true", "aspcap"]
    with_spectra = catalog["HAS_SPECTRUM"].to_numpy()
    assert catalog["RIDGE__TEFF"].notna().to_numpy().tolist() == with_spectra.tolist()
    assert catalog["TRAINING"].sum() == pytest.approx(0.7 * 24, abs=6)
    assert not catalog["TRAINING"][~with_spectra].any()
    stars = demo.universe.stars
    np.testing.assert_array_equal(catalog["TRUE__TEFF"], stars["TRUE_TEFF"])
    pipeline = stars["FE_H"].where(stars["FE_H"] > -9000)
    np.testing.assert_array_equal(catalog["ASPCAP__FE_H"].isna(), pipeline.isna())
    assert (demo.out / "catalog.parquet").is_file()
    assert demo.skipped == {}


def test_second_run_reuses_universe_models_and_predictions(built):
    out, first, lines = built
    model_dirs = sorted((out / "models").iterdir())
    stamps = [p.stat().st_mtime_ns for p in model_dirs]
    again = []
    second = build_demo(out, models=["ridge"], log=again.append, **TINY)
    assert any("loading the model trained by an earlier run" in line for line in again)
    assert not any("training on" in line for line in again)
    assert [p.stat().st_mtime_ns for p in sorted((out / "models").iterdir())] == stamps
    np.testing.assert_array_equal(second.catalog["RIDGE__TEFF"], first.catalog["RIDGE__TEFF"])
    assert second.models["ridge"].label_names_ == first.models["ridge"].label_names_


def test_a_model_that_fails_is_skipped_and_reported(built, monkeypatch):
    out, _, _ = built
    monkeypatch.setitem(demo_module.RECIPES, "slam", Recipe("basic", {"c_grid": (-1.0,)}))
    lines = []
    demo = build_demo(out, models=["ridge", "slam"], log=lines.append, **TINY)
    assert "slam" in demo.skipped and "slam" not in demo.models
    assert not any(c.startswith("SLAM__") for c in demo.catalog.columns)
    assert any("slam: skipped" in line for line in lines)


def test_unknown_model_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(UnknownNameError, match="did you mean 'ridge'"):
        build_demo(tmp_path / "new", models=["ridg"], **TINY)
    assert not (tmp_path / "new").exists()


def test_demo_state_serves_spectra_of_every_star(built):
    _, demo, _ = built
    state = demo.state()
    without_file = demo.catalog["ID"][~demo.catalog["HAS_SPECTRUM"]].iloc[0]
    spectrum = state.spectra.spectrum(without_file)  # regenerated from the seed
    assert spectrum.n_pixels == 8575 and spectrum.ids[0] == without_file
    assert demo.state() is not state and demo.state().spectra is state.spectra  # one cache per process


def test_demo_command_build_only(built, capsys):
    out, _, _ = built
    status = main(["demo", "--out", str(out), "--stars", "200", "--spectra", "24", "--galaxies", "0",
                   "--models", "ridge", "--workers", "1", "--build-only"])
    assert status == 0
    assert "demo ready: 200 stars, methods ridge" in capsys.readouterr().out


def test_serve_command_reports_a_missing_catalog(tmp_path, capsys):
    status = main(["serve", str(tmp_path / "nothing.parquet"), "--no-browser"])
    assert status == 2
    assert "nothing.parquet: catalog file not found" in capsys.readouterr().err


def test_serve_refuses_a_busy_port(built):
    from labelexplorer.dashboard.app import serve

    _, demo, _ = built
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(LabelExplorerError, match="choose another port"):
            serve(demo.state, port=busy.getsockname()[1], show=False, block=False)


def test_demo_catalog_without_predictions_keeps_references():
    from labelexplorer.mock import population

    catalog = demo_catalog(population(20, seed=1), {}, training_ids=[])
    assert catalog_sources(catalog.columns) == ["true", "aspcap"]
    assert not catalog["TRAINING"].any()
