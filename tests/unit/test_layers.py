"""The layers of the package (README, "Development"), read from the imports of the code: an
import points down or sideways, never up, and no module comes back to itself."""

import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = 'wazo_ha_common'

# bottom first: a module imports modules of its own layer and of the layers below
LAYERS = (
    ('decisions', ('wazo_ha_common', 'wazo_ha_common.errors', 'wazo_ha_common.decisions')),
    ('settings', ('wazo_ha_common.settings',)),
    ('adapters', ('wazo_ha_common.adapters', 'wazo_ha_common.role', 'wazo_ha_common.jobs',
                  'wazo_ha_common.schedule')),
    ('domains', ('wazo_ha_common.replication', 'wazo_ha_common.stream', 'wazo_ha_common.files',
                 'wazo_ha_common.access', 'wazo_ha_common.failover')),
    ('commands', ('wazo_ha_common.cli', 'wazo_ha_common.status', 'wazo_ha_common.pause',
                  'wazo_ha_common.role_setup', 'wazo_ha_common.hooks',
                  'wazo_ha_common.monitoring', 'wazo_ha_common.diagnosis', 'bin')),
)
# outside imports that one place owns (STYLE.md habit 3)
OWNERS = {'subprocess': ('wazo_ha_common.adapters.system',),
          'psycopg2': ('wazo_ha_common.adapters.db',),
          'requests': ('wazo_ha_common.adapters.probes', 'wazo_ha_common.adapters.wazo_api')}


def sources() -> dict[str, tuple[str, bool]]:
    """module name -> (path, is a package); the commands of bin/ as bin.NAME."""
    found = {}
    for folder, _, files in os.walk(os.path.join(REPO, PACKAGE)):
        for name in files:
            if name.endswith('.py'):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, REPO)[:-3].replace(os.sep, '.')
                package = name == '__init__.py'
                found[module[:-len('.__init__')] if package else module] = (path, package)
    for name in os.listdir(os.path.join(REPO, 'bin')):
        found[f'bin.{name}'] = (os.path.join(REPO, 'bin', name), False)
    return found


def imports(module: str, path: str, package: bool, known) -> set[str]:
    """Every module `module` imports, at the top or inside a function (absolute names)."""
    here = module if package else module.rpartition('.')[0]
    found = set()
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = here.split('.')
                base = '.'.join(parts[:len(parts) - node.level + 1]
                                + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                found.add(f'{base}.{alias.name}' if f'{base}.{alias.name}' in known else base)
    return found


def layer(module: str) -> int:
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            exact_only = prefix == PACKAGE
            if module == prefix or (not exact_only and module.startswith(prefix + '.')):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    assert best is not None, f'{module} is in no layer: add it to LAYERS and to the README map'
    return best[0]


def graph() -> dict[str, set[str]]:
    known = sources()
    return {m: imports(m, path, package, known) for m, (path, package) in known.items()}


def test_every_module_has_a_layer():
    for module in sources():
        layer(module)


def test_the_readme_names_every_module():
    """README "Development" is the map of these layers: one line for each module."""
    with open(os.path.join(REPO, 'README.md')) as f:
        text = f.read()
    section = text[text.index('## Development'):]
    section = section[:section.index('Around the package')]
    missing = [m for m in sources() if not m.startswith('bin.') and not m == PACKAGE
               and f"`{m.rpartition('.')[2]}" not in section
               and f"/{m.rpartition('.')[2]}`" not in section
               and f"/{m.rpartition('.')[2]}/`" not in section]
    assert missing == []


def test_no_import_runs_up():
    up = []
    for module, targets in graph().items():
        for target in targets:
            if target.split('.')[0] == PACKAGE and layer(target) > layer(module):
                up.append(f'{module} ({LAYERS[layer(module)][0]}) imports {target} '
                          f'({LAYERS[layer(target)][0]})')
    assert up == []


def test_no_module_comes_back_to_itself():
    edges = {m: {t for t in targets if t.split('.')[0] == PACKAGE}
             for m, targets in graph().items()}
    circles, state = [], {}

    def visit(module, path):
        state[module] = 'open'
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 'open':
                circles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = 'done'

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_outside_libraries_have_one_owner():
    strays = []
    for module, targets in graph().items():
        for library, owners in OWNERS.items():
            if any(t == library or t.startswith(library + '.') for t in targets) \
                    and not any(module == o or module.startswith(o + '.') for o in owners):
                strays.append(f'{module} imports {library}')
    assert strays == []


def test_the_layer_rule_sees_an_import_that_runs_up(tmp_path):
    """The reading itself: a decision importing a command is caught."""
    path = tmp_path / 'fake.py'
    path.write_text('from ..status import evaluate\nfrom . import health\n')
    known = {'wazo_ha_common.status', 'wazo_ha_common.decisions.health'}
    found = imports('wazo_ha_common.decisions.fake', str(path), False, known)
    assert found == {'wazo_ha_common.status', 'wazo_ha_common.decisions.health'}
    assert layer('wazo_ha_common.status') > layer('wazo_ha_common.decisions.fake')


LIGHT_CHECK = '''
import sys
from wazo_ha_common import hooks, settings
from wazo_ha_common.decisions import health
from wazo_ha_common.failover import check
loaded = lambda: sorted(m for m in sys.modules if m.split('.')[0] == 'psycopg2'
                        or m.startswith(('wazo_ha_common.stream', 'wazo_ha_common.access',
                                         'wazo_ha_common.files.sync',
                                         'wazo_ha_common.replication')))
after_import = loaded()
s = settings.load(sys.argv[1])
assert not s.continuous
given = hooks.for_check(s)
given.before_serving(s)
memory, verdict = health.observe(health.Memory(master='198.18.0.2'),
                                 health.Probe(at=1.0, master=False, witness=None, detail='no answer'),
                                 health.Policy(5, 15, 60), 'boot')
print(after_import, loaded(), verdict.decision)
'''


def test_the_failover_check_loads_no_database_stream_or_file_sync_code(tmp_path):
    """Hourly mode: importing the check, and its hooks and decision, load neither psycopg2 nor
    the stream, the node access, the replication or wazo-sync."""
    config = tmp_path / 'config.ini'
    config.write_text('[database]\nmode = hourly\n')
    result = subprocess.run([sys.executable, '-c', LIGHT_CHECK, str(config)], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split('\n')[0] == "[] [] unknown"
