"""The ``labelexplorer`` command line: ``demo | mock | fetch | train | predict | serve``.

Each command lives in the module that owns its work and exposes two functions,
``configure_parser(parser)`` and ``run(args) -> int``; this file only maps names to
modules, so importing the CLI stays fast and no command's code lives twice.
Errors the user can fix (:class:`LabelExplorerError`) are printed as one line and
exit with status 2; Ctrl-C exits with 130 after the command has saved its progress.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .exceptions import LabelExplorerError

__all__ = ["main", "COMMANDS"]

#: command name -> (module with configure_parser/run, one-line help)
COMMANDS = {
    "fetch": ("labelexplorer.io.manifest", "download a real dataset listed in data_manifest.yaml"),
    "mock": ("labelexplorer.mock.universe", "write the mock universe in the real survey file formats"),
    "train": ("labelexplorer.catalog", "train a model on spectrum files and a label table, and save it"),
    "predict": ("labelexplorer.catalog", "predict a catalog of labels for survey files (resumable, Dask scale-out)"),
    "demo": ("labelexplorer.dashboard.demo", "build the mock universe, train the models and serve the dashboard"),
    "serve": ("labelexplorer.dashboard.demo", "serve the dashboard for existing catalog files on 127.0.0.1"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per entry of :data:`COMMANDS`.

    Examples
    --------
    >>> parser = build_parser()
    >>> parser.prog
    'labelexplorer'
    """
    from . import __version__

    parser = argparse.ArgumentParser(prog="labelexplorer", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"labelexplorer {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module_name)
        importlib.import_module(module_name).configure_parser(sub)
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 1
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except LabelExplorerError as err:
        print(f"labelexplorer {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"labelexplorer {args.command}: interrupted; progress so far is saved, run again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
