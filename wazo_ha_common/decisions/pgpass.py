"""PostgreSQL password files (.pgpass): a line's fields as libpq escapes them, finding and
setting our line among the others."""

from __future__ import annotations


def pgpass_field(value) -> str:
    return str(value).replace('\\', '\\\\').replace(':', '\\:')


def pgpass_prefix(host: str, port: int, database: str, user: str) -> str:
    return ':'.join(pgpass_field(v) for v in (host, port, database, user)) + ':'


def pgpass_password(text: str, prefix: str) -> str | None:
    """The password of the line starting with prefix (fields as libpq escapes them)."""
    for line in text.splitlines():
        if line.startswith(prefix):
            value = line[len(prefix):]
            return value.replace('\\:', ':').replace('\\\\', '\\')
    return None


def with_pgpass_line(text: str, prefix: str, password: str) -> str:
    """The password file with our line set, every other line kept in order."""
    lines = [line for line in text.splitlines() if not line.startswith(prefix)]
    return '\n'.join(lines + [prefix + pgpass_field(password)]) + '\n'
