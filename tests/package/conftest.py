from package_helpers import deb, wazo_node  # noqa: F401 (fixtures)
