"""SOURCES: every dataset source by name (a leaf module: it imports none of the sources).

Each source registers itself with ``@SOURCES.register(name, reference=...)`` in its own file
(``sources.py``, ``synthetic.py``); ``poisonlab/data/__init__.py`` imports those files, so the
registry is complete once ``poisonlab.data`` is imported.
"""

from __future__ import annotations

from poisonlab.registry import Registry

SOURCES = Registry("dataset")
