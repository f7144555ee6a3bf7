"""The export profiles (``*.toml`` here), installed as the package ``lway_rt.profiles``.

pyproject.toml maps ``lway_rt.profiles`` to this folder, so a wheel carries the profiles inside
``lway_rt/`` and an editable install imports them from here; ``lway_rt.export.profile`` finds
them through that package. This file only makes the folder a package: nothing imports code from it.
"""
