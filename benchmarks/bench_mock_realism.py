"""How close the mock APOGEE physics comes to real spectra at the same labels.

For the real DR14 giant of ``shared/data/apogee/example_dr14`` (normalised flux on the
7514-pixel gap-removed grid, ASPCAP labels in its JSON) and for every real aspcapStar
file of ``shared/data/apogee/aspcapStar`` whose Teff, logg and [M/H] are not -9999
(HDU1 normalised flux on 8575 pixels, HDU2 its error, HDU4 ``PARAM``), the noiseless mock
spectrum is computed at the star's labels and compared over the real spectrum's good
pixels:

- ``r``: Pearson correlation between the line depths ``1 - flux`` of mock and real;
- lines: the real local minima deeper than 0.1 (``1 - flux > 0.1``) and how many of them
  the mock reproduces: a mock local minimum at most 2 pixels away, at least 0.05 deep;
- ``mock>0.1 real``: of the mock's own minima deeper than 0.1, the fraction that sit within
  2 pixels of a real minimum at least 0.05 deep (so a mock that puts lines everywhere
  does not score).

The mock never sees the real spectra: the figures measure the physics and the line list.
The DR13 ``PARAM`` vector is (Teff, logg, log10 vmicro, [M/H], [C/M], [N/M], [α/M],
log10 vsini, [O/M]); ``[Fe/H]`` is taken as ``[M/H]`` and α elements get ``[α/M]``.

Usage::

    python benchmarks/bench_mock_realism.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from labelexplorer.mock.apogee_physics import normalized_flux
from labelexplorer.preprocess.grid import remove_gaps

REAL_DATA = Path(os.environ.get("LABELEXPLORER_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
ALPHA_LABELS = ("O_FE", "MG_FE", "SI_FE", "S_FE", "CA_FE", "TI_FE")
LINE_DEPTH = 0.1
MATCH_DEPTH = 0.05
MATCH_PIXELS = 2


def mock_labels(teff, logg, m_h, alpha_m=0.0, c_m=0.0, n_m=0.0, vmicro=None, vmacro=None, vsini=0.0) -> dict:
    """Label dict of :func:`normalized_flux` for one star given ASPCAP-style parameters."""
    labels = {"TEFF": [teff], "LOGG": [logg], "FE_H": [m_h], "C_FE": [c_m], "N_FE": [n_m], "VSINI": [vsini]}
    labels.update({name: [alpha_m] for name in ALPHA_LABELS})
    if vmicro is not None:
        labels["VMICRO"] = [vmicro]
    if vmacro is not None:
        labels["VMACRO"] = [vmacro]
    return labels


def dr14_star():
    folder = REAL_DATA / "apogee" / "example_dr14"
    meta = json.loads((folder / "apogee_dr14_example.json").read_text())
    data = np.load(folder / "apogee_dr14_example.npz", allow_pickle=False)
    labels = mock_labels(meta["effective_temperature"], meta["log_surface_gravity"], meta["metallicity"],
                         meta["alpha_enhancement"], meta["carbon_over_m"], meta["nitrogen_over_m"],
                         vmicro=meta["microturbulence_km_s"], vmacro=meta["macroscopic_broadening_km_s"])
    good = data["good_pixel_mask"] & np.isfinite(data["normalized_flux"])
    return dict(name=meta["object_id"] + " (DR14)", labels=labels, flux=data["normalized_flux"], good=good,
                snr=float(np.nanmedian(1.0 / data["normalized_error"][good])))


def aspcap_stars():
    from astropy.io import fits

    stars = []
    for path in sorted((REAL_DATA / "apogee" / "aspcapStar").glob("aspcapStar-*.fits")):
        with fits.open(path) as hdul:
            param = np.asarray(hdul[4].data["PARAM"][0], dtype=float)
            flux = np.asarray(hdul[1].data, dtype=float)
            error = np.asarray(hdul[2].data, dtype=float)
            snr = float(hdul[0].header.get("SNR", np.nan))
        if np.any(param[[0, 1, 3]] <= -9000):
            continue
        value = {k: (param[i] if param[i] > -9000 else 0.0) for i, k in enumerate(
            ("teff", "logg", "log_vmicro", "m_h", "c_m", "n_m", "alpha_m", "log_vsini"))}
        vsini = 10 ** value["log_vsini"] if value["logg"] > 3.5 and param[7] > -9000 else 0.0
        labels = mock_labels(value["teff"], value["logg"], value["m_h"], value["alpha_m"], value["c_m"],
                             value["n_m"], vmicro=10 ** value["log_vmicro"] if param[2] > -9000 else None,
                             vsini=min(vsini, 300.0))
        flux, error = remove_gaps(flux, "dr17"), remove_gaps(error, "dr17")
        good = np.isfinite(flux) & (flux > 0) & np.isfinite(error) & (error > 0) & (error < 1.0)
        stars.append(dict(name=path.name.split("-", 3)[-1].removesuffix(".fits"), labels=labels, flux=flux,
                          good=good, snr=snr))
    return stars


def local_minima(flux: np.ndarray, good: np.ndarray, depth: float) -> np.ndarray:
    """Indices of good pixels that are local minima with 1 - flux > depth."""
    inner = np.arange(1, flux.size - 1)
    is_min = (flux[inner] < flux[inner - 1]) & (flux[inner] <= flux[inner + 1]) & good[inner]
    index = inner[is_min]
    return index[1.0 - flux[index] > depth]


def matched(positions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Whether each position has a target at most MATCH_PIXELS away."""
    if targets.size == 0:
        return np.zeros(positions.size, dtype=bool)
    index = np.clip(np.searchsorted(targets, positions), 1, targets.size - 1)
    distance = np.minimum(np.abs(targets[index] - positions), np.abs(targets[index - 1] - positions))
    return distance <= MATCH_PIXELS


def compare(star: dict) -> dict:
    mock = remove_gaps(normalized_flux(star["labels"])[0].astype(float), "dr17")
    real, good = star["flux"], star["good"]
    r = float(np.corrcoef(1.0 - mock[good], 1.0 - real[good])[0, 1])
    real_lines = local_minima(real, good, LINE_DEPTH)
    mock_any = local_minima(mock, good, MATCH_DEPTH)
    found = matched(real_lines, mock_any)
    mock_lines = local_minima(mock, good, LINE_DEPTH)
    real_any = local_minima(real, good, MATCH_DEPTH)
    precision = float(matched(mock_lines, real_any).mean()) if mock_lines.size else float("nan")
    teff, logg, feh = (star["labels"][k][0] for k in ("TEFF", "LOGG", "FE_H"))
    return dict(name=star["name"], teff=teff, logg=logg, feh=feh, snr=star["snr"], n_good=int(good.sum()), r=r,
                n_real=real_lines.size, n_found=int(found.sum()), n_mock=mock_lines.size, precision=precision)


def main() -> None:
    stars = [dr14_star(), *aspcap_stars()]
    rows = [compare(star) for star in stars]
    header = (f"{'star':<30} {'Teff':>6} {'logg':>5} {'[M/H]':>6} {'SNR':>6} {'good px':>7} {'r':>6} "
              f"{'lines>0.1':>9} {'found':>6} {'frac':>6} {'mock>0.1':>8} {'real':>6}")
    print(header)
    print("-" * len(header))
    for row in rows:
        fraction = row["n_found"] / row["n_real"] if row["n_real"] else float("nan")
        print(f"{row['name']:<30} {row['teff']:6.0f} {row['logg']:5.2f} {row['feh']:6.2f} {row['snr']:6.0f} "
              f"{row['n_good']:7d} {row['r']:6.3f} {row['n_real']:9d} {row['n_found']:6d} {fraction:6.2f} "
              f"{row['n_mock']:8d} {row['precision']:6.2f}")
    giant = rows[0]
    total_real = sum(row["n_real"] for row in rows)
    total_found = sum(row["n_found"] for row in rows)
    print()
    print(f"DR14 giant: r = {giant['r']:.3f}; lines deeper than {LINE_DEPTH}: {giant['n_found']}/{giant['n_real']} "
          f"reproduced within {MATCH_PIXELS} px ({giant['n_found'] / max(giant['n_real'], 1):.0%}); "
          f"{giant['precision']:.0%} of the mock's lines > {LINE_DEPTH} are real")
    print(f"all {len(rows)} stars: mean r = {np.mean([row['r'] for row in rows]):.3f}; "
          f"{total_found}/{total_real} real lines reproduced ({total_found / max(total_real, 1):.0%})")


if __name__ == "__main__":
    main()
