# -*- test-case-name: tests.test_service -*-
"""
A persistent L{tcpext.browser.GrantStore}: one JSON file per extension in the
service's state folder, written atomically.
"""

from __future__ import annotations

import json
import os
import tempfile

from twisted.logger import Logger
from zope.interface import implementer

from tcpext._statefolder import GRANTS_FOLDER, makePrivateFolders
from tcpext.browser import GrantStore
from tcpext.extension import validateExtensionId

__all__ = ["GRANTS_FOLDER", "JSONGrantStore"]


_FORMAT = 1
_MAX_BYTES = 1 << 20


@implementer(GrantStore)
class JSONGrantStore:
    """
    Keeps each extension's runtime grants in C{<state>/grants/<id>.json}:
    C{{"format": 1, "extension": "<id>", "grants": ["tcp-...", ...]}}.

    Writes go to a temporary file in the same folder, which is flushed,
    C{fsync}ed and renamed over the old file (and the folder is C{fsync}ed),
    so a crash leaves either the old or the new grants, never a mix.  A file
    that cannot be read or parsed is reported and treated as holding no
    grants (fail closed), a file nested too deeply for the parser
    included.  Folders are created with mode C{0700} and files with
    C{0600}.
    """

    log = Logger()

    def __init__(self, stateDirectory: str) -> None:
        """
        @param stateDirectory: The service's state folder (created on the
            first save if needed).
        """
        self.stateDirectory = os.path.abspath(stateDirectory)
        self.directory = os.path.join(self.stateDirectory, GRANTS_FOLDER)

    def pathFor(self, extensionId: str) -> str:
        """
        The file that holds C{extensionId}'s grants.

        @raise ValueError: If C{extensionId} is not a valid id (so it can
            never name a file outside the folder).
        """
        return os.path.join(self.directory, validateExtensionId(extensionId) + ".json")

    def load(self, extensionId: str) -> list[str]:
        """
        The grants saved for C{extensionId}; empty if none were saved or the
        file is unreadable or corrupt (which is logged).
        """
        path = self.pathFor(extensionId)
        try:
            with open(path, "rb") as f:
                data = f.read(_MAX_BYTES + 1)
        except FileNotFoundError:
            return []
        except OSError as e:
            self._corrupt(extensionId, path, f"cannot be read: {e}")
            return []
        if len(data) > _MAX_BYTES:
            self._corrupt(extensionId, path, f"larger than {_MAX_BYTES} bytes")
            return []
        try:
            content = json.loads(data.decode("utf-8"))
        except ValueError as e:
            self._corrupt(extensionId, path, f"invalid JSON: {e}")
            return []
        except RecursionError:
            self._corrupt(extensionId, path, "invalid JSON: nested too deeply")
            return []
        if (
            not isinstance(content, dict)
            or content.get("format") != _FORMAT
            or not isinstance(content.get("grants"), list)
            or not all(isinstance(g, str) for g in content["grants"])
        ):
            self._corrupt(
                extensionId,
                path,
                f'not a {{"format": {_FORMAT}, "grants": [strings]}} object',
            )
            return []
        if content.get("extension") != extensionId:
            self._corrupt(
                extensionId,
                path,
                f"it belongs to {content.get('extension')!r}, not {extensionId!r}",
            )
            return []
        return list(content["grants"])

    def _corrupt(self, extensionId: str, path: str, reason: str) -> None:
        """
        Report a grant file that cannot be used.
        """
        self.log.error(
            "extension {extensionId!r}: grant file {path} {reason}; "
            "treating it as no grants",
            extensionId=extensionId,
            path=path,
            reason=reason,
        )

    def save(self, extensionId: str, entries: list[str]) -> None:
        """
        Atomically replace the grants saved for C{extensionId}.

        @raise OSError: If the file cannot be written (the old one is kept).
        """
        path = self.pathFor(extensionId)
        makePrivateFolders(self.directory)
        data = json.dumps(
            {"format": _FORMAT, "extension": extensionId, "grants": list(entries)},
            indent=1,
        ).encode("utf-8")
        fd, temporary = tempfile.mkstemp(
            prefix=f".{extensionId}.", suffix=".tmp", dir=self.directory
        )
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        except BaseException:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise
        try:
            directoryFD = os.open(self.directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(directoryFD)
        except OSError:
            pass
        finally:
            os.close(directoryFD)
