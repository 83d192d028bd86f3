"""Ratatouille: a self-hostable lakehouse as one Dagster code location.

``from ratatouille_assets import rat`` is the Python SDK (:mod:`ratatouille_assets.sdk`), imported
on first use so that loading the code location does not pay for it.
"""


def __getattr__(name: str):
    if name == "rat":
        from ratatouille_assets.sdk import rat

        return rat
    raise AttributeError(f"module 'ratatouille_assets' has no attribute {name!r}")
