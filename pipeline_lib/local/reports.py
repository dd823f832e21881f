"""`xact-pipeline notebooks` (`make notebooks`): execute every analyst notebook headless against the
tables the settings point at (papermill, the notebooks' `parameters` cell), and write each executed
copy as HTML under `var/reports/` for a person to open in a browser. The stored notebooks stay
without outputs.

Needs the dev extras (papermill, nbconvert, ipykernel, matplotlib), which `make install` installs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from pipeline_lib.errors import PipelineError
from pipeline_lib.logs import get_logger

log = get_logger("reports")


def notebooks_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "notebooks"
    if not here.is_dir():
        raise PipelineError(f"no notebooks/ folder at {here}: run this from a checkout of the project")
    return here


def execute_notebook(path: Path, out_dir: Path, parameters: dict[str, object], timeout: float = 900) -> Path:
    """Execute one notebook with `parameters`; returns the executed .ipynb (an .html beside it)."""
    try:
        import papermill
        from nbconvert import HTMLExporter
    except ImportError as exc:
        raise PipelineError(f"executing notebooks needs the dev extras ({exc.name} is missing): make install") from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / path.name
    started = time.monotonic()
    papermill.execute_notebook(
        str(path),
        str(executed),
        parameters=parameters,
        kernel_name="python3",
        progress_bar=False,
        log_output=False,
        execution_timeout=int(timeout),
        cwd=str(path.parent.parent),
    )
    body, _ = HTMLExporter().from_filename(str(executed))
    html = executed.with_suffix(".html")
    html.write_text(body, encoding="utf-8")
    log.info("%s executed in %.0fs: %s", path.name, time.monotonic() - started, html)
    return executed


def run_notebooks(out_dir: Path, env: str, overrides: Sequence[str], names: Sequence[str] | None = None) -> list[Path]:
    """Execute the notebooks (all, or `names`) against the settings of `env` + `overrides`."""
    folder = notebooks_dir()
    chosen = sorted(folder.glob("*.ipynb")) if not names else [folder / n for n in names]
    return [execute_notebook(nb, out_dir, {"env": env, "overrides": list(overrides)}) for nb in chosen]
