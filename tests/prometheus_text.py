"""A strict reader of Prometheus's text exposition format (version 0.0.4), for the tests:
every line must be a HELP, a TYPE or a sample of the family announced just before; names,
label escapes, values and duplicates are checked. Debian 12 ships no prometheus_client for
/usr/bin/python3, hence this one."""

import math
import re

NAME = re.compile(r'[a-zA-Z_:][a-zA-Z0-9_:]*')
LABEL_NAME = re.compile(r'[a-zA-Z_][a-zA-Z0-9_]*')
TYPES = ('counter', 'gauge', 'histogram', 'summary', 'untyped')


class FormatError(AssertionError):
    pass


def _value(text: str, line: str) -> float:
    if text in ('NaN', '+Inf', '-Inf'):
        return float(text.replace('Inf', 'inf').replace('NaN', 'nan'))
    if not re.fullmatch(r'[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?', text):
        raise FormatError(f'not a value: {text!r} in {line!r}')
    return float(text)


def _labels(text: str, line: str) -> dict:
    labels, pos = {}, 0
    while pos < len(text):
        m = LABEL_NAME.match(text, pos)
        if not m or text[m.end():m.end() + 2] != '="':
            raise FormatError(f'bad label at {text[pos:]!r} in {line!r}')
        name, pos, value = m.group(), m.end() + 2, ''
        while True:
            if pos >= len(text):
                raise FormatError(f'unterminated label value in {line!r}')
            c = text[pos]
            if c == '\\':
                nxt = text[pos + 1:pos + 2]
                if nxt not in ('\\', '"', 'n'):
                    raise FormatError(f'bad escape \\{nxt} in {line!r}')
                value += '\n' if nxt == 'n' else nxt
                pos += 2
            elif c == '"':
                pos += 1
                break
            elif c == '\n':
                raise FormatError(f'newline in a label value in {line!r}')
            else:
                value += c
                pos += 1
        if name in labels:
            raise FormatError(f'label {name} twice in {line!r}')
        labels[name] = value
        if pos < len(text):
            if text[pos] != ',':
                raise FormatError(f'expected , at {text[pos:]!r} in {line!r}')
            pos += 1
    return labels


def _enter_family(name: str, current, done: set):
    """The family a line belongs to: a family met again after another one is refused."""
    if name != current:
        if name in done:
            raise FormatError(f'family {name} is not contiguous')
        if current:
            done.add(current)
    return name


def parse(text: str) -> tuple[dict, dict, dict]:
    """(samples {(name, ((label, value), ...)): value}, types {name: type}, helps {name: text})."""
    if not text.endswith('\n'):
        raise FormatError('the text must end with a newline')
    samples, types, helps, done, current = {}, {}, {}, set(), None
    for line in text[:-1].split('\n'):
        if line.startswith('# HELP ') or line.startswith('# TYPE '):
            kind, _, rest = line[2:].partition(' ')
            name, _, arg = rest.partition(' ')
            if not NAME.fullmatch(name):
                raise FormatError(f'bad metric name in {line!r}')
            current = _enter_family(name, current, done)
            table = helps if kind == 'HELP' else types
            if name in table:
                raise FormatError(f'{kind} of {name} twice')
            if kind == 'TYPE':
                if arg not in TYPES:
                    raise FormatError(f'unknown type in {line!r}')
                if any(key[0] == name for key in samples):
                    raise FormatError(f'TYPE of {name} after its samples')
            table[name] = arg
            continue
        if line.startswith('#') or not line.strip():
            if line.strip() and not line.startswith('# '):
                raise FormatError(f'bad comment {line!r}')
            continue
        m = NAME.match(line)
        if not m:
            raise FormatError(f'bad sample line {line!r}')
        name, rest = m.group(), line[m.end():]
        labels = {}
        if rest.startswith('{'):
            end = rest.rfind('}')
            if end < 0:
                raise FormatError(f'unterminated labels in {line!r}')
            labels = _labels(rest[1:end], line)
            rest = rest[end + 1:]
        if not rest.startswith(' '):
            raise FormatError(f'no value in {line!r}')
        fields = rest.split()
        if not 1 <= len(fields) <= 2:
            raise FormatError(f'bad value/timestamp in {line!r}')
        value = _value(fields[0], line)
        if len(fields) == 2 and not re.fullmatch(r'-?\d+', fields[1]):
            raise FormatError(f'bad timestamp in {line!r}')
        current = _enter_family(name, current, done)
        key = (name, tuple(sorted(labels.items())))
        if key in samples:
            raise FormatError(f'duplicate sample {line!r}')
        if math.isnan(value) and types.get(name) == 'counter':
            raise FormatError(f'a counter is NaN in {line!r}')
        samples[key] = value
    return samples, types, helps
