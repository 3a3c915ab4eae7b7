"""Views without a browser: instantiate them, call their callbacks, check the state and the plotted data."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import pandas as pd
import pytest

from labelexplorer import Spectra, get_model
from labelexplorer.dashboard.state import ExplorerState, GalaxySource, combine_catalog
from labelexplorer.dashboard.views.clusters import ClusterView
from labelexplorer.dashboard.views.dashboard import Dashboard, explore
from labelexplorer.dashboard.views.export import ExportView
from labelexplorer.dashboard.views.galaxies import GalaxyView
from labelexplorer.dashboard.views.inspector import StarInspector, element_windows, mask_intervals
from labelexplorer.dashboard.views.sensitivity import SensitivityView
from labelexplorer.dashboard.views.sequences import SequenceView
from labelexplorer.dashboard.views.teff_logg import LabelPlane, NearestStar
from labelexplorer.preprocess.grid import apogee_wavelength

class FakeSpectra:
    """Spectra on the APOGEE grid whose Mg lines deepen with [Mg/H]: a stand-in for a survey."""

    def __init__(self, catalog: pd.DataFrame):
        self.catalog = catalog.set_index("ID")
        self.wavelength = apogee_wavelength()
        self.lines = np.exp(-0.5 * ((self.wavelength[:, None] - [15745.0, 15770.0]) / 0.4) ** 2).sum(axis=1)

    def flux(self, star_id: str) -> np.ndarray:
        row = self.catalog.loc[star_id]
        mg_h = row["TRUE__MG_FE"] + row["TRUE__FE_H"]
        return 1.0 - 0.2 * (1 + mg_h) * self.lines - 1e-5 * (row["TRUE__TEFF"] - 5000) * (self.wavelength > 16000)

    def spectrum(self, star_id: str) -> Spectra:
        flux = self.flux(star_id)
        mask = np.zeros(flux.size, bool)
        mask[100:110] = True
        return Spectra(flux, self.wavelength, error=np.full(flux.size, 0.01), mask=mask, ids=[star_id],
                       info={"model_flux": flux[None, :]})

    def batch(self, star_ids) -> Spectra:
        return Spectra.concatenate([self.spectrum(s) for s in star_ids])


@pytest.fixture(scope="module")
def catalog(dashboard_catalog) -> pd.DataFrame:
    return dashboard_catalog.copy()


@pytest.fixture(scope="module")
def ridge(catalog):
    spectra = FakeSpectra(catalog)
    train = catalog["ID"].iloc[:60]
    data = spectra.batch(train)
    labels = catalog.iloc[:60][["TRUE__TEFF", "TRUE__MG_FE"]].rename(columns=lambda c: c[6:])
    return get_model("ridge", alpha=1e-3, n_bootstrap=2, n_folds=2).fit(data, labels)


@pytest.fixture
def state(catalog, ridge) -> ExplorerState:
    return ExplorerState(catalog, models={"ridge": ridge}, spectra=FakeSpectra(catalog))


# ------------------------------------------------------------------------------------ label plane
@pytest.mark.parametrize("seed", range(5))
def test_nearest_star_is_exact_in_screen_coordinates_when_zoomed(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(3000, 7000, 3000), rng.uniform(0, 5, 3000)
    tree = NearestStar(x, y)
    x_range, y_range = (4500.0, 4500.0 + rng.uniform(20, 2000)), (2.0, 2.0 + rng.uniform(0.05, 3))
    for qx, qy in rng.uniform([x_range[0], y_range[0]], [x_range[1], y_range[1]], (20, 2)):
        screen = np.hypot((x - qx) / np.ptp(x_range), (y - qy) / np.ptp(y_range))
        assert tree.nearest(qx, qy, x_range, y_range) == int(np.argmin(screen))


def test_nearest_star_far_from_every_star_falls_back_to_one_exact_pass(monkeypatch):
    from labelexplorer.dashboard.views import teff_logg

    monkeypatch.setattr(teff_logg, "_MAX_CANDIDATES", 8)
    rng = np.random.default_rng(7)
    x, y = rng.normal(5000, 100, 2000), rng.normal(3.0, 0.1, 2000)
    tree = NearestStar(x, y)
    x_range, y_range = (6000.0, 6010.0), (0.0, 5.0)  # an empty, very stretched view
    screen = np.hypot((x - 6005.0) / 10.0, (y - 1.0) / 5.0)
    assert tree.nearest(6005.0, 1.0, x_range, y_range) == int(np.argmin(screen))


def test_nearest_star_ignores_missing_values_and_empty_input():
    assert NearestStar([np.nan, 1.0], [0.0, 1.0]).nearest(0.0, 0.0) == 1
    assert NearestStar([np.nan], [np.nan]).nearest(0.0, 0.0) is None


def test_click_makes_the_nearest_plotted_star_active(state, catalog):
    plane = LabelPlane(state)
    x, y = catalog["RIDGE__TEFF"].to_numpy(), catalog["RIDGE__LOGG"].to_numpy()
    target = 77
    assert plane.click(x[target] + 1.0, y[target]) == catalog["ID"][target]
    assert state.star == catalog["ID"][target] and plane.last_tap == (x[target] + 1.0, y[target])
    plane._on_tap(x=x[0 + 25], y=y[25])  # the Tap stream callback goes through the same path
    assert state.star == catalog["ID"][25]


def test_click_never_picks_a_star_the_method_did_not_predict(state, catalog):
    plane = LabelPlane(state)
    truth_of_unpredicted = catalog[["TRUE__TEFF", "TRUE__LOGG"]].iloc[3]
    plane.click(*truth_of_unpredicted)
    assert state.positions([state.star])[0] >= 20


def test_box_and_lasso_selections(state, catalog):
    plane = LabelPlane(state)
    x, y = catalog["RIDGE__TEFF"], catalog["RIDGE__LOGG"]
    rows = plane.select_box((6000.0, 4.0, 4500.0, 1.0))  # corners in any order (inverted axes)
    expected = np.flatnonzero((x >= 4500) & (x <= 6000) & (y >= 1) & (y <= 4))
    assert rows.tolist() == expected.tolist() == state.selection.tolist()
    plane._on_lasso(geometry=np.array([[4500.0, 1.0], [6000.0, 1.0], [6000.0, 4.0], [4500.0, 4.0]]))
    assert state.selection.tolist() == expected.tolist()


def test_raster_counts_every_plotted_star(state, catalog):
    plane = LabelPlane(state)
    image = plane.raster[()]
    assert isinstance(image, hv.Image)
    counts = np.nan_to_num(image.dimension_values(2))
    assert counts.sum() == catalog["RIDGE__TEFF"].notna().sum() == 180
    plot = hv.render(plane._pane.object)
    assert plot.x_range.start > plot.x_range.end  # Teff increases to the left


def test_colour_and_method_switch_redraw_the_plane(state):
    plane = LabelPlane(state)
    first = plane._pane.object
    plane.colour = "TEFF_ERR"
    assert plane._pane.object is not first
    assert plane.raster[()].vdims[0].name.endswith("TEFF_ERR")
    state.method = "bcnn-censored"
    assert plane.param.colour.objects[:3] == ["count", "TEFF", "TEFF_ERR"]
    plane.colour = "count"
    assert "BCNN_CENSORED__TEFF" in plane.raster[()].kdims[0].name
    assert np.nansum(plane.raster[()].dimension_values(2)) == len(state)  # bcnn predicted every star


def test_zoomed_in_view_draws_individual_stars(state):
    plane = LabelPlane(state, max_points=50)
    many = plane._zoomed_points(x_range=(3000.0, 7000.0), y_range=(0.0, 5.0))
    few = plane._zoomed_points(x_range=(5000.0, 5200.0), y_range=(2.0, 3.0))
    assert len(many) == 0
    assert 0 < len(few) <= 50


def test_plane_empty_state_for_a_missing_label(state):
    plane = LabelPlane(state)
    plane.y = "MG_H"  # ridge has no [Mg/H]
    assert plane._message.visible and plane._pane.object is None
    assert "ridge" in plane._message.object and "MG_H" in plane._message.object


# ------------------------------------------------------------------------------------ inspector
def test_inspector_shows_spectrum_masks_windows_and_sensitivity(state, ridge, catalog):
    inspector = StarInspector(state)
    assert "Click a star" in inspector._header.object
    state.label, state.element = "MG_FE", "Mg"
    state.select_star("2M00000042")
    assert "2M00000042" in inspector._header.object
    layout = inspector._plots.object
    spectrum_panel, sensitivity_panel = layout
    curves = {el.label: el for el in spectrum_panel if isinstance(el, hv.Curve)}
    np.testing.assert_allclose(curves["spectrum"].dimension_values(1)[110:120],
                               state.spectra.flux("2M00000042")[110:120], rtol=1e-6)
    masked = [el for el in spectrum_panel if isinstance(el, hv.VSpans) and el.label == "masked"][0]
    assert masked.array().tolist() == [[apogee_wavelength()[100], apogee_wavelength()[109]]]
    windows = [el for el in spectrum_panel if isinstance(el, hv.VSpans) and "windows" in el.label][0]
    assert len(windows) == len(element_windows().as_intervals("Mg")) > 0
    sensitivity = [el for el in sensitivity_panel if isinstance(el, hv.Curve)][0]
    np.testing.assert_allclose(sensitivity.dimension_values(1), ridge.coef_[ridge.label_names_.index("MG_FE")])
    assert "pipeline model" in curves
    row = catalog.set_index("ID").loc["2M00000042"]
    assert f"{row['RIDGE__TEFF']:.0f} ± {row['RIDGE__TEFF_ERR']:.0f}" in inspector._table.object
    assert "model 0.030 · pred 0.040" in inspector._table.object and "bcnn-censored" in inspector._table.object


def test_inspector_navigation_by_buttons_and_keys(state):
    inspector = StarInspector(state)
    state.select([30, 31, 32])
    inspector.next_button.clicks += 1
    assert state.star == "2M00000030"
    inspector.keys.key = "ArrowRight"
    inspector.keys.presses += 1
    assert state.star == "2M00000031"
    inspector.keys.key = "k"
    inspector.keys.presses += 1
    assert state.star == "2M00000030"
    inspector.previous_button.clicks += 1
    assert state.star == "2M00000032"


def test_inspector_without_spectra_or_model_explains_why(catalog):
    state = ExplorerState(catalog)
    inspector = StarInspector(state)
    state.select_star("2M00000021")
    assert inspector._plots.object is None
    assert "No spectrum source" in inspector.status
    assert "ridge" in inspector._table.object


def test_inspector_raw_mode_shows_the_continuum(catalog, ridge):
    class WithRaw(FakeSpectra):
        def raw(self, star_id):
            normalised = self.spectrum(star_id)
            return normalised.replace(flux=normalised.flux * 300.0, error=normalised.error * 300.0)

    state = ExplorerState(catalog, models={"ridge": ridge}, spectra=WithRaw(catalog))
    inspector = StarInspector(state, flux="raw")
    state.select_star("2M00000042")
    continuum = [el for el in inspector._plots.object[0] if el.label == "continuum"][0]
    assert np.nanmedian(continuum.dimension_values(1)) == pytest.approx(300.0)


def test_mask_intervals():
    mask = np.zeros(10, bool)
    mask[[0, 1, 5, 9]] = True
    assert mask_intervals(np.arange(10.0), mask).tolist() == [[0.0, 1.0], [5.0, 5.0], [9.0, 9.0]]


# ------------------------------------------------------------------------------------ other views
def test_sequence_view_forms_x_fe_from_x_h(state, catalog):
    state.method = "bcnn-censored"
    view = SequenceView(state)
    data = view.sequence("bcnn-censored", "Mg")
    np.testing.assert_allclose(data["X_FE"], catalog["BCNN_CENSORED__MG_H"] - catalog["BCNN_CENSORED__FE_H"])
    comparison = view.comparison()
    assert comparison.loc["Mg", "bias"] == pytest.approx(0.0, abs=1e-9)  # the +0.05 offsets cancel in [Mg/Fe]
    assert comparison.loc["Mg", "n"] == len(catalog)
    assert view._planes.object is not None
    view.all_elements = True
    assert view._grid.visible and view._grid.object is not None


def test_sequence_view_overlays_the_selection(state):
    view = SequenceView(state)
    state.select([25, 26, 27])
    points = view.selected_points(view.sequence("ridge"))
    np.testing.assert_allclose(points.dimension_values("X_FE"), state.catalog["RIDGE__MG_FE"].iloc[25:28])


def test_cluster_view_reports_spread_against_uncertainty(state, catalog):
    view = ClusterView(state)
    assert view.cluster == "M67"
    report = view.report().set_index(["source", "label"])
    members = catalog[catalog["CLUSTER"] == "M67"]
    assert report.loc[("true", "FE_H"), "spread"] == pytest.approx(members["TRUE__FE_H"].std(ddof=1))
    assert report.loc[("ridge", "FE_H"), "n"] == 10  # members 20-29 have ridge predictions
    assert report.loc[("ridge", "FE_H"), "mean_error"] == pytest.approx(0.05)
    mg_al = view.mg_al()
    assert set(mg_al) == {"ridge", "true"}  # the censored BCNN of this catalog has no Al
    np.testing.assert_allclose(mg_al["true"].al, members["TRUE__AL_FE"])
    assert view._spread.object is not None and view._mg_al.object is not None


def test_cluster_view_empty_state(catalog):
    view = ClusterView(ExplorerState(catalog.drop(columns="CLUSTER")))
    assert view.cluster is None and view._message.visible


def test_sensitivity_view_subsets(state, ridge, catalog):
    state.label = "MG_FE"
    view = SensitivityView(state, max_stars=8)
    poor = view.subset_rows("metal-poor")
    assert (catalog["RIDGE__FE_H"].iloc[poor] < -0.5).all() and poor.min() >= 20
    curves = view.compute()
    assert set(curves) == {"metal-poor", "metal-rich"}
    np.testing.assert_allclose(curves["metal-poor"], ridge.coef_[ridge.label_names_.index("MG_FE")])
    assert view._plot.object is not None and view.status == ""
    view.first = "selection"
    assert view.subset_rows("selection").size == 0
    view.compute()
    assert "subset 'selection' is empty" in view.status


def test_sensitivity_view_needs_a_model(catalog):
    view = SensitivityView(ExplorerState(catalog))
    assert view.compute() == {} and "No fitted ridge model" in view.status
    assert view.cod_figure() is None


@pytest.fixture
def galaxies(tmp_path) -> GalaxySource:
    from PIL import Image

    rng = np.random.default_rng(0)
    mass = rng.uniform(8.5, 11.0, 80)
    truth = -1.492 + 1.847 * mass - 0.08026 * mass**2 + rng.normal(0, 0.1, 80)
    table = pd.DataFrame({"objID": [str(1237650000000000000 + i) for i in range(80)], "log_mstar": mass,
                          "oh_p50": truth, "GALAXY_CNN__OH_P50": truth + rng.normal(0, 0.05, 80)})
    for obj in table["objID"][:3]:
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"{obj}.jpg")
    return GalaxySource(table, tmp_path)


def test_galaxy_view(state, galaxies):
    state.galaxies = galaxies
    view = GalaxyView(state)
    assert view.methods() == ["galaxy-cnn"]
    scores = view.scores()
    truth, predicted = galaxies.catalog["oh_p50"], galaxies.catalog["GALAXY_CNN__OH_P50"]
    assert scores.loc["galaxy-cnn", "rmse"] == pytest.approx(np.sqrt(np.mean((predicted - truth) ** 2)))
    rows = view.select_box((8.5, 0.0, 9.0, 20.0))
    assert (galaxies.catalog["log_mstar"].iloc[rows] <= 9.0).all() and rows.size > 0
    items = view.gallery_items()
    assert [i["objID"] for i in items] == galaxies.catalog["objID"].iloc[rows[:12]].tolist()
    assert len(view._gallery.objects) == len(items)
    assert view._mzr.object is not None and view._versus.object is not None


def test_galaxy_view_without_galaxies_or_predictions(state, galaxies):
    view = GalaxyView(state)
    assert view._message.visible and view.gallery_items() == []
    state.galaxies = GalaxySource(galaxies.catalog.drop(columns="GALAXY_CNN__OH_P50"), galaxies.folder)
    assert not view._message.visible and view.methods() == [] and view.scores().empty


def test_export_view_downloads_the_selection(state):
    view = ExportView(state, format="parquet")
    assert view.download.disabled
    state.select([5, 6])
    assert not view.download.disabled and "2 stars selected" in view.summary.object.replace(
        "<span id='selection-count'>2</span>", "2")
    payload = pd.read_parquet(view._payload())
    assert payload["ID"].tolist() == ["2M00000005", "2M00000006"]
    assert view.download.filename == "labelexplorer-selection.parquet"
    view.clear_button.clicks += 1
    assert state.selection.size == 0


def test_explore_builds_every_view_from_a_catalog_file(tmp_path, catalog):
    path = tmp_path / "catalog.parquet"
    catalog.to_parquet(path)
    dashboard = explore(str(path), method="bcnn-censored")
    assert isinstance(dashboard, Dashboard) and dashboard.state.method == "bcnn-censored"
    assert len(dashboard.state) == len(catalog)
    dashboard.plane.click(5000.0, 3.0)
    assert dashboard.inspector._header.object.count(dashboard.state.star) == 1
    assert dashboard.main() is not None and dashboard.sidebar() is not None


def test_combined_catalog_from_predictions_feeds_the_views():
    stars = pd.DataFrame({"APOGEE_ID": ["a", "b", "c"]})
    from labelexplorer import LabelPrediction

    pred = LabelPrediction(["TEFF", "LOGG"], [[4000.0, 1.0], [5000.0, 4.0], [6000.0, 4.5]], ids=["a", "b", "c"])
    state = ExplorerState(combine_catalog(stars, {"ridge": pred}, id_column="APOGEE_ID"))
    LabelPlane(state).click(5900.0, 4.4)
    assert state.star == "c"
