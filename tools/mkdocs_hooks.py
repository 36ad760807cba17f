"""mkdocs hook: links from docs/ to files of the repository outside it (``../benchmarks/README.md``).

Those links work where the docs are read in the repository (GitHub renders them), but mkdocs
can only check and serve files under docs/. Rather than turn its link checking down for every
link, this hook checks such a link itself — the file must exist in the repository, else the
strict build fails naming page and link — and replaces it in the site by the file's path as
code, since the site has no copy of the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

LINK = re.compile(r"\[([^\]]+)\]\(((?:\.\./)+[^)#\s]+)(#[^)\s]*)?\)")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs = Path(config["docs_dir"]).resolve()
    repo = docs.parent
    folder = (docs / page.file.src_path).parent

    def outside(match: re.Match[str]) -> str:
        target = (folder / match[2]).resolve()
        if target.is_relative_to(docs):
            return match[0]  # inside docs/: mkdocs checks it
        if not target.is_relative_to(repo) or not target.exists():
            raise PluginError(
                f"{page.file.src_path}: link {match[2]} names no file of the repository"
            )
        path = target.relative_to(repo).as_posix()
        text = match[1]
        return text if f"`{path}`" in text or text == f"`{path}`" else f"{text} (`{path}`)"

    return LINK.sub(outside, markdown)
