"""The served dashboard: a page template around :class:`~labelexplorer.dashboard.views.dashboard.Dashboard`.

Two ways in:

- ``labelexplorer demo`` / ``labelexplorer serve CATALOG...`` call :func:`serve`;
- ``panel serve labelexplorer/dashboard/app.py --args CATALOG... [--universe DIR] [--model DIR]``
  runs this file as a Bokeh app (the template is built only then, never on import, so
  notebooks reuse the views without it).

Imports are absolute because ``panel serve`` runs this file as a script, outside its package.

Every browser session gets its own :class:`~labelexplorer.dashboard.state.ExplorerState`
over the same in-memory catalog, models and spectrum source. Pages load nothing from
outside the server: the template (Bootstrap) and every JavaScript/CSS resource are
served from 127.0.0.1, and the server listens on the loopback interface only. Which
catalogs are served is fixed at start-up; no page can open another file.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
import urllib.error
import urllib.request
from typing import Callable

from labelexplorer.exceptions import LabelExplorerError

__all__ = ["build_page", "serve", "LOOPBACK"]

LOOPBACK = "127.0.0.1"
_READY_TIMEOUT_S = 120.0


def build_page(dashboard):
    """The page template (Bootstrap: no web fonts or CDN files) around a Dashboard.

    Examples
    --------
    >>> import pandas as pd
    >>> from labelexplorer.dashboard import explore
    >>> page = build_page(explore(pd.DataFrame({"ID": ["a"], "TRUE__TEFF": [5000.0]})))
    >>> type(page).__name__
    'BootstrapTemplate'
    """
    import panel as pn

    return pn.template.BootstrapTemplate(title="labelexplorer — click a star", sidebar=[dashboard.sidebar()],
                                         main=[dashboard.main()], sidebar_width=300, header_background="#1f4e79")


def _check_port(address: str, port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((address, port))
        except OSError as exc:
            raise LabelExplorerError(f"--port {port}: cannot listen on {address}:{port} ({exc.strerror}); "
                                     "choose another port") from exc


def _wait_for_page(url: str, timeout: float = _READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                response.read()
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise LabelExplorerError(f"the dashboard did not answer at {url} within {timeout:.0f} s ({exc})") from exc
            time.sleep(0.2)


def serve(make_state: Callable, *, port: int = 5006, address: str = LOOPBACK, show: bool = True,
          started: float | None = None, block: bool = True, log: Callable[[str], None] = print):
    """Serve the dashboard, one state per session, and report the time to the first served page.

    Parameters
    ----------
    make_state : callable
        Returns a new :class:`ExplorerState` (called once per browser session).
    port : int
        Port on *address*.
    address : str
        Interface to listen on (the loopback by default: nothing is exposed to the network).
    show : bool
        Open the page in a browser.
    started : float, optional
        ``time.perf_counter()`` at the start of the command, for the time-to-page report.
    block : bool
        Serve until Ctrl-C (True), or return the running server thread (call ``.stop()``).
    log : callable
        Receives the address and timing line.

    Examples
    --------
    >>> import pandas as pd
    >>> from labelexplorer.dashboard import ExplorerState
    >>> catalog = pd.DataFrame({"ID": ["a"], "TRUE__TEFF": [5000.0]})
    >>> server = serve(lambda: ExplorerState(catalog), port=5006, show=False, block=False)  # doctest: +SKIP
    labelexplorer dashboard: http://127.0.0.1:5006/  (first page served 2.1 s after start)
    >>> server.stop()  # doctest: +SKIP
    """
    import panel as pn

    from labelexplorer.dashboard.views.dashboard import Dashboard

    started = time.perf_counter() if started is None else started
    _check_port(address, port)

    def page():
        return build_page(Dashboard(make_state()))

    server = pn.serve({"/": page}, port=port, address=address, show=False, threaded=True, title="labelexplorer",
                      websocket_origin=[f"{address}:{port}", f"localhost:{port}"], verbose=False)
    url = f"http://{address}:{port}/"
    _wait_for_page(url)
    log(f"labelexplorer dashboard: {url}  (first page served {time.perf_counter() - started:.1f} s after start)")
    if show:
        import webbrowser

        webbrowser.open(url)
    if not block:
        return server
    log("press Ctrl-C to stop")
    try:
        while server.is_alive():
            server.join(0.5)
    except KeyboardInterrupt:
        log("stopping")
    finally:
        server.stop()
    return server


def _served_from_panel() -> None:
    """Build the page when this file is run by ``panel serve ... --args``."""
    from labelexplorer.dashboard.state import ExplorerState, GalaxySource, UniverseSpectra, read_catalog
    from labelexplorer.dashboard.views.dashboard import Dashboard

    parser = argparse.ArgumentParser(prog="panel serve labelexplorer/dashboard/app.py --args")
    parser.add_argument("catalog", nargs="+")
    parser.add_argument("--universe")
    parser.add_argument("--model", action="append", default=[])
    args = parser.parse_args(sys.argv[1:])
    from labelexplorer.models.base import load_model

    models = {model.name: model for model in map(load_model, args.model)}
    spectra = UniverseSpectra(args.universe) if args.universe else None
    galaxies = GalaxySource.from_universe(spectra.universe) if spectra else None
    state = ExplorerState(read_catalog(args.catalog), models=models, spectra=spectra, galaxies=galaxies)
    build_page(Dashboard(state)).servable()


if __name__.startswith("bokeh_app"):
    _served_from_panel()
