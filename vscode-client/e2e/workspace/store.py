"""A tiny JSON-backed store: the sample workspace of the VS Code end-to-end test.

`handle`, `helper` and `x` are badly named on purpose: pathfusion suggests better names.
"""

import json


def handle(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def save_json(path, data):
    """Write ``data`` to ``path`` as indented JSON."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)


class Store:
    def __init__(self, name, connection=None):
        self._name = name
        self._connection = connection

    def helper(self):
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def x(self):
        return self._name
