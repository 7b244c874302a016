"""MkDocs hook: docstrings use Sphinx roles (``:class:`Job```), which Markdown shows verbatim.

mkdocstrings renders ``:class:`Job``` as ``:class:<code>Job</code>``; this drops
the role so the reference reads ``Job`` in code font.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|meth|func|data|attr|exc|mod|obj):(?=<code>)")


def on_page_content(html: str, **kwargs: Any) -> str:
    """Strip Sphinx role prefixes in front of inline code."""
    return _ROLE.sub("", html)
