"""Functions with unhelpful names, for `make demo` (pathfusion suggests better ones)."""

import json
import os


def f1(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def helper(self):
    if self._connection is not None:
        self._connection.close()
        self._connection = None


def do_it(items, key):
    result = {}
    for item in items:
        result.setdefault(item[key], []).append(item)
    return result


def check(self, value):
    if not isinstance(value, int):
        raise TypeError("expected an int")
    return value


def thing(directory):
    names = []
    for name in os.listdir(directory):
        if name.endswith(".py"):
            names.append(os.path.join(directory, name))
    return sorted(names)


def x(self):
    return self._name
