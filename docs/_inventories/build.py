"""Write the intersphinx inventories of the docs from their text sources.

The docs are built without network access, so ``conf.py`` points intersphinx at
these files instead of the projects' published ``objects.inv``. Each ``NAME.txt``
lists the objects our pages link to, one per line in the inventory format
``name domain:role priority uri display-name`` (``$`` in the uri stands for the
name, ``-`` as display name for the name itself), after two header lines naming the
project and version. To link to a new object, add its line (copy it from the
project's real inventory, e.g. ``python -m sphinx.ext.intersphinx URL/objects.inv``
where there is network access) and run ``python docs/_inventories/build.py``.
tests/test_docs.py checks that the ``.inv`` files match their sources.
"""

from __future__ import annotations

import pathlib
import zlib

HERE = pathlib.Path(__file__).parent


def parse(source: str) -> tuple[str, str, list[str]]:
    """The project, version and entry lines of an inventory source."""
    project = version = ""
    entries = []
    for line in source.splitlines():
        if line.startswith("# Project: "):
            project = line.removeprefix("# Project: ")
        elif line.startswith("# Version: "):
            version = line.removeprefix("# Version: ")
        elif line.strip() and not line.startswith("#"):
            entries.append(line.strip())
    return project, version, entries


def render(source: str) -> bytes:
    """The ``objects.inv`` (version 2) bytes for an inventory source."""
    project, version, entries = parse(source)
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = "".join(f"{entry}\n" for entry in entries)
    return header.encode() + zlib.compress(body.encode(), 9)


def main() -> None:
    for source in sorted(HERE.glob("*.txt")):
        source.with_suffix(".inv").write_bytes(render(source.read_text()))


if __name__ == "__main__":
    main()
