"""Render docs/_static/toolbar-panel.png: the toolbar's "SQL queries" panel on
the N+1 page of docs/examples/queries.py, with headless Chromium.

    python docs/make_screenshot.py  # needs chromium (Debian: apt-get install chromium)

The page is the real toolbar output of a test-client request; only the toolbar's
static files are pointed at the installed package, and the panel is shown open.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import warnings

import flask_debugtoolbar

from flask_session_orm import NPlusOneWarning

DOCS = pathlib.Path(__file__).parent
OPEN_PANEL = """<style>
#flDebugSessionORMQueriesPanel-content { display: block !important; }
</style>"""


def main() -> None:
    work = pathlib.Path(tempfile.mkdtemp())
    shutil.copy(DOCS / "examples" / "queries.py", work / "queries.py")
    sys.path.insert(0, str(work))
    os.environ["FLASK_DEBUG"] = "1"
    queries = importlib.import_module("queries")
    queries.app.test_cli_runner().invoke(args=["seed"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NPlusOneWarning)
        page = queries.app.test_client().get("/").text
    static = pathlib.Path(flask_debugtoolbar.__file__).parent / "static"
    page = page.replace("/_debug_toolbar/static/", static.as_uri() + "/")
    page = page.replace("</body>", OPEN_PANEL + "</body>")
    html = work / "page.html"
    html.write_text(page)
    out = DOCS / "_static" / "toolbar-panel.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1100,760",
            f"--screenshot={out}",
            html.as_uri(),
        ],
        check=True,
    )
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
