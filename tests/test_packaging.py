# -*- test-case-name: tests.test_packaging -*-
"""
Tests for the package's metadata: what C{setup.cfg} declares matches what
the code imports, the version has one source, the package is typed, and the
sdist is told to carry the docs, tests and examples.  (C{.ci/package-check}
builds the sdist and the wheel and tries the installed wheel.)
"""

from __future__ import annotations

import ast
import configparser
import os
import re
import sys
from functools import cache
from importlib import metadata

from twisted.trial.unittest import SynchronousTestCase

import tcpext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup() -> configparser.ConfigParser:
    """
    C{setup.cfg}, parsed.
    """
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"), encoding="utf-8")
    return config


def _canonical(name: str) -> str:
    """
    A distribution name in its canonical form (PEP 503).
    """
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirementNames(text: str) -> set[str]:
    """
    The canonical distribution names of a C{setup.cfg} requirement list.
    """
    names = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if match is not None:
            names.add(_canonical(match.group(0)))
    return names


def _imports(path: str) -> set[str]:
    """
    Every module a Python file imports (at any level, absolute imports only),
    as dotted names.
    """
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


@cache
def _fileIndex() -> dict[str, frozenset[str]]:
    """
    For every installed distribution's files: their first folder, their
    first two folders and their top-level module file (C{zope},
    C{zope/interface}, C{six.py}), each mapped to the canonical names of the
    distributions holding it.  (Built from the files themselves: Python
    3.10's C{packages_distributions} reads only C{top_level.txt}, which some
    wheels lack.)
    """
    index: dict[str, set[str]] = {}
    for distribution in metadata.distributions():
        name = distribution.metadata["Name"]
        if not name:
            continue
        for path in distribution.files or []:
            parts = path.parts
            keys = {parts[0]} if len(parts) == 1 else {parts[0], "/".join(parts[:2])}
            for key in keys:
                index.setdefault(key, set()).add(_canonical(name))
    return {key: frozenset(names) for key, names in index.items()}


def _distributionsOf(module: str) -> frozenset[str]:
    """
    The canonical names of the installed distributions that provide
    C{module} (for a namespace package such as C{zope}, the ones that hold
    the submodule).
    """
    index = _fileIndex()
    parts = module.split(".")
    for key in ("/".join(parts[:2]), parts[0], parts[0] + ".py"):
        if key in index:
            return index[key]
    return frozenset()


class DependencyTests(SynchronousTestCase):
    """
    C{install_requires} declares what C{tcpext/} and the plugin import.
    """

    def test_everyImportDeclared(self) -> None:
        """
        Every third-party module imported by the code comes from a
        distribution that C{install_requires} names (or one it pulls in
        through an extra it names, as C{twisted[tls]} does for pyOpenSSL).
        """
        declared = _requirementNames(_setup()["options"]["install_requires"])
        sources = [
            os.path.join(ROOT, "tcpext", name)
            for name in os.listdir(os.path.join(ROOT, "tcpext"))
            if name.endswith(".py")
        ] + [os.path.join(ROOT, "twisted", "plugins", "tcpext_plugin.py")]
        undeclared = {}
        for path in sources:
            for module in _imports(path):
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in ("tcpext", "__future__"):
                    continue
                providers = _distributionsOf(module)
                if not providers:
                    undeclared[module] = f"{os.path.basename(path)}: not installed"
                elif not providers & declared:
                    undeclared[module] = (
                        f"{os.path.basename(path)}: from {sorted(providers)}"
                    )
        self.assertEqual(undeclared, {})

    def test_zopeInterfaceDeclared(self) -> None:
        """
        C{zope.interface}, imported directly by many modules, is declared
        (not left to come through Twisted).
        """
        declared = _requirementNames(_setup()["options"]["install_requires"])
        self.assertIn("zope-interface", declared)

    def test_devToolsPinned(self) -> None:
        """
        The dev extra pins the tools whose verdicts CI relies on, towncrier
        and pydoctor included.
        """
        dev = _setup()["options.extras_require"]["dev"]
        for tool in ("ruff", "mypy", "mypy-zope", "towncrier", "pydoctor"):
            self.assertRegex(dev, rf"(?m)^\s*{re.escape(tool)} == \S+$")


class MetadataTests(SynchronousTestCase):
    """
    The version, the licence and the typing marker.
    """

    def test_versionSingleSource(self) -> None:
        """
        C{setup.cfg} takes the version from C{tcpext.__version__}, and the
        installed metadata agrees with it.
        """
        self.assertEqual(
            _setup()["metadata"]["version"].strip(), "attr: tcpext.__version__"
        )
        self.assertRegex(tcpext.__version__, r"^\d+\.\d+\.\d+([.-]?\w+)*$")
        self.assertEqual(metadata.version("tcpext"), tcpext.__version__)

    def test_licenseExpression(self) -> None:
        """
        The licence is an SPDX expression, with no (deprecated) licence
        classifier beside it.
        """
        meta = _setup()["metadata"]
        self.assertEqual(meta["license_expression"].strip(), "MIT")
        self.assertNotIn("license", meta)
        self.assertNotIn("License ::", meta["classifiers"])

    def test_typed(self) -> None:
        """
        C{tcpext/py.typed} exists and is package data (PEP 561).
        """
        self.assertTrue(os.path.isfile(os.path.join(ROOT, "tcpext", "py.typed")))
        data = _setup()["options.package_data"]["tcpext"].split()
        self.assertIn("py.typed", data)
        self.assertIn("Typing :: Typed", _setup()["metadata"]["classifiers"])


class ManifestTests(SynchronousTestCase):
    """
    C{MANIFEST.in} puts the docs, tests, examples, benchmarks and changelog
    into the sdist.
    """

    def test_grafts(self) -> None:
        """
        Each folder a user or a packager needs is grafted, and the files the
        tests read are included.
        """
        with open(os.path.join(ROOT, "MANIFEST.in"), encoding="utf-8") as f:
            lines = [line.split("#")[0].split() for line in f]
        grafted = {words[1] for words in lines if words[:1] == ["graft"]}
        self.assertTrue(
            {"docs", "examples", "tests", "benchmarks", "newsfragments", ".ci"}
            <= grafted
        )
        included = {w for words in lines if words[:1] == ["include"] for w in words}
        self.assertTrue({"LICENSE", "README.md", "CHANGELOG.md"} <= included)
