"""
Write a Sphinx inventory (C{objects.inv}) of Python's built-in names and
standard-library modules, pointing at docs.python.org, for pydoctor's
C{--intersphinx-file}: the API reference links C{None}, C{ValueError} or
C{ipaddress} without fetching Python's own inventory (CI has no network but
the package registries).

    python .ci/python_inventory.py OUTPUT
"""

import builtins
import sys
import zlib

BASE = "https://docs.python.org/3/"


def entries() -> list[str]:
    """
    One inventory line per built-in constant, exception, class and function,
    and per standard-library module.
    """
    lines = []
    for name in sorted(dir(builtins)):
        if name.startswith("_"):
            continue
        value = getattr(builtins, name)
        if name in ("None", "True", "False", "Ellipsis", "NotImplemented"):
            lines.append(f"{name} py:data 1 library/constants.html#$ -")
        elif isinstance(value, type) and issubclass(value, BaseException):
            lines.append(f"{name} py:exception 1 library/exceptions.html#$ -")
        elif isinstance(value, type):
            lines.append(f"{name} py:class 1 library/functions.html#$ -")
        elif callable(value):
            lines.append(f"{name} py:function 1 library/functions.html#$ -")
    for module in sorted(sys.stdlib_module_names):
        if module.startswith("_"):
            continue
        lines.append(f"{module} py:module 0 library/{module}.html#module-$ -")
    return lines


def inventory() -> bytes:
    """
    The inventory file: a plain header, then the entries, zlib-compressed.
    """
    header = (
        "# Sphinx inventory version 2\n"
        "# Project: Python\n"
        f"# Version: {sys.version_info[0]}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = "".join(line + "\n" for line in entries())
    return header.encode("utf-8") + zlib.compress(body.encode("utf-8"))


if __name__ == "__main__":
    with open(sys.argv[1], "wb") as f:
        f.write(inventory())
