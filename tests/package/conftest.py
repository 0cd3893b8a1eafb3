from package_helpers import deb  # noqa: F401 (fixture)
