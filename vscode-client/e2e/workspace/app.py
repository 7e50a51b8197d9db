"""Uses the store: the rename of `store.handle` must reach this file too."""

from store import Store, handle, save_json


def main(path):
    settings = handle(path)
    settings["runs"] = settings.get("runs", 0) + 1
    save_json(path, settings)
    store = Store("settings")
    store.helper()
    return settings
