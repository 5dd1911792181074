"""
Extension folders written by tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence


def extensionWithScript(
    parent: str,
    name: str,
    permissions: Sequence[str],
    script: str,
    optional: Sequence[str] | None = None,
) -> str:
    """
    Write the extension C{name} in a new folder C{parent/name}: a manifest
    with these C{permissions} (and C{optional_permissions}, if given) and
    C{background.py} holding C{script}.

    @return: The folder's path.
    """
    folder = os.path.join(parent, name)
    os.makedirs(folder)
    manifest: dict[str, object] = {
        "manifest_version": 2,
        "name": name,
        "version": "1.0",
        "permissions": list(permissions),
        "background": {"scripts": ["background.py"]},
    }
    if optional is not None:
        manifest["optional_permissions"] = list(optional)
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    with open(os.path.join(folder, "background.py"), "w") as f:
        f.write(script)
    return folder
