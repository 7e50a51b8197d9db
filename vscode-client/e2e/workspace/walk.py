"""More functions to search among."""

import os


def python_files(directory):
    """The .py files directly inside ``directory``, sorted."""
    names = []
    for name in os.listdir(directory):
        if name.endswith(".py"):
            names.append(os.path.join(directory, name))
    return sorted(names)


def group_by(items, key):
    result = {}
    for item in items:
        result.setdefault(item[key], []).append(item)
    return result
