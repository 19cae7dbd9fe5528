"""``harness report``: one self-contained HTML page of recordings, evaluations, sweeps, estimates."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from harness.commands.common import check_output, emit_json, err_console, user_errors
from harness.errors import ConfigError


def report_command(
    inputs: list[Path] = typer.Argument(..., help="Recordings (.h5), sweep folders, or JSON from harness evaluate/accel --json."),
    html: Path = typer.Option(..., "--html", help="The report to write (.html); opens from disk, no network needed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing report."),
    json_out: bool = typer.Option(False, "--json", help="Print only one JSON object on stdout."),
) -> None:
    """Write one HTML report of the inputs: plots embedded, provenance at the bottom."""
    with user_errors():
        out = check_output(html, option="--html", suffixes=(".html", ".htm"), overwrite=overwrite)
        from harness.report import MAX_REPORT_BYTES, build_report

        text = build_report(inputs, command=["harness", *sys.argv[1:]])
        data = text.encode("utf-8")
        if len(data) > MAX_REPORT_BYTES:
            raise ConfigError(f"the report would be {len(data) / 2**20:.0f} MiB; the limit is {MAX_REPORT_BYTES / 2**20:.0f} MiB")
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        if json_out:
            emit_json({"html": str(out), "bytes": len(data), "inputs": [str(p) for p in inputs]})
        else:
            err_console.print(f"wrote {out} ({len(data) / 1024:.0f} KiB)", markup=False, highlight=False)
