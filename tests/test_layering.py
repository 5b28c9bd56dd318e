"""The package's layers, checked on its import graph (AST, every module, imports inside functions included).

* The pure core, every module under ``calibseg/functional`` and ``calibseg/calibrators`` (recursively), imports no
  OpenMMLab package, neither directly nor through the calibseg modules it imports (and their parent packages).
* ``calibseg/evaluation`` does not import ``calibseg/engine`` (the engine's hooks read what the metrics publish).
* Nothing in ``calibseg`` imports ``tools`` (command lines sit on top of the package, never below it).

The root ``calibseg/__init__.py`` is the one exception to the parent-package rule: it imports mmseg inside
``try/except ImportError`` only to register modules, so ``import calibseg.functional`` works without OpenMMLab.
:func:`test_pure_core_imports_with_openmmlab_blocked` checks exactly that at run time.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from collections import deque
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: OpenMMLab's packages (top-level import names); any other top-level name starting with ``mm`` that is not a
#: standard-library module (``mmap``) counts too.
OPENMMLAB = {'mmengine', 'mmcv', 'mmseg', 'mmdet', 'mmdet3d', 'mmpretrain', 'mmcls', 'mmpose', 'mmocr', 'mmagic',
             'mmedit', 'mmrotate', 'mmtrack', 'mmaction', 'mmflow', 'mmselfsup', 'mmyolo', 'mmrazor', 'mmdeploy',
             'mmfewshot', 'mmgen', 'mmhuman3d', 'mim'}
PURE_CORE = ('calibseg.functional', 'calibseg.calibrators')


def is_openmmlab(name: str) -> bool:
    top = name.split('.')[0]
    return top in OPENMMLAB or (top.startswith('mm') and top not in sys.stdlib_module_names)


# ----------------------------------------------------------------------------------------------- import graph
def module_files(src: Path, package: str) -> Dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` under ``src/package`` (packages by their ``__init__``)."""
    modules = {}
    for path in sorted((src / package).rglob('*.py')):
        parts = list(path.relative_to(src).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts.pop()
        modules['.'.join(parts)] = path
    return modules


def _resolve(module: str, is_package: bool, level: int, target: Optional[str]) -> str:
    """Absolute name of ``from <level dots><target> import ...`` written in ``module``."""
    base = module.split('.') if is_package else module.split('.')[:-1]
    if level > 1:
        base = base[:len(base) - (level - 1)]
    return '.'.join(base + ([target] if target else []))


def imported_names(module: str, path: Path) -> Set[str]:
    """Every module name ``path`` may import: ``import a.b`` gives ``a.b``; ``from a import b`` gives ``a`` and
    ``a.b`` (``b`` may be a submodule); relative imports resolved; ``importlib.import_module('x')`` with a literal
    counts too."""
    tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
    is_package = path.name == '__init__.py'
    names: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ''
            else:
                base = _resolve(module, is_package, node.level, node.module)
            names.add(base)
            names.update(f'{base}.{alias.name}' for alias in node.names if alias.name != '*')
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', '')
            if called in ('import_module', '__import__'):
                names.add(node.args[0].value)
    return {name for name in names if name}


def import_graph(src: Path, package: str) -> Dict[str, Set[str]]:
    """Edges of the import graph: each module of ``package`` to the names it imports, plus its parent packages
    (importing ``a.b.c`` runs ``a/b/__init__.py``), except the root package (see the module docstring)."""
    files = module_files(src, package)
    graph = {}
    for module, path in files.items():
        edges = imported_names(module, path)
        parts = module.split('.')
        edges.update('.'.join(parts[:i]) for i in range(2, len(parts)))  # parents below the root
        graph[module] = edges
    return graph


def _internal(name: str, graph: Dict[str, Set[str]]) -> Optional[str]:
    """The module of ``graph`` that importing ``name`` runs (``a.b.func`` -> ``a.b``), or ``None``."""
    while name and name not in graph:
        name = name.rpartition('.')[0]
    return name or None


def find_chain(start: str, graph: Dict[str, Set[str]], forbidden) -> Optional[List[str]]:
    """Shortest import chain from ``start`` to a name for which ``forbidden(name)`` holds (breadth-first, through
    the package's own modules), or ``None``."""
    parent: Dict[str, Optional[str]] = {start: None}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for name in sorted(graph[module]):
            if forbidden(name):
                chain = [name, module]
                while parent[chain[-1]] is not None:
                    chain.append(parent[chain[-1]])
                return chain[::-1]
            inner = _internal(name, graph)
            if inner is not None and inner not in parent:
                parent[inner] = module
                queue.append(inner)
    return None


def layering_violations(src: Path, package: str = 'calibseg') -> List[str]:
    """Every broken rule of the module docstring, one line each with the import chain that breaks it."""
    graph = import_graph(src, package)
    pure = tuple(name.replace('calibseg', package, 1) for name in PURE_CORE)
    engine = f'{package}.engine'
    found = []
    for module in sorted(graph):
        if module in pure or module.startswith(tuple(p + '.' for p in pure)):
            chain = find_chain(module, graph, is_openmmlab)
            if chain:
                found.append('pure core imports OpenMMLab: ' + ' -> '.join(chain))
        if module == f'{package}.evaluation' or module.startswith(f'{package}.evaluation.'):
            chain = find_chain(module, graph, lambda name: name == engine or name.startswith(engine + '.'))
            if chain:
                found.append('evaluation imports engine: ' + ' -> '.join(chain))
        tools = sorted(name for name in graph[module] if name.split('.')[0] == 'tools')
        if tools:
            found.append(f'{module} imports tools: {tools}')
    return found


# ----------------------------------------------------------------------------------------------- the package
def test_calibseg_layers():
    assert layering_violations(ROOT) == []


def test_graph_covers_nested_packages():
    """The walk is recursive: sub-packages of the pure core (functional/saliency, ...) and single modules
    (functional/mixup.py) are in the graph the rules run on."""
    modules = module_files(ROOT, 'calibseg')
    for name in ('calibseg.functional.mixup', 'calibseg.functional.saliency', 'calibseg.functional.losses.utils',
                 'calibseg.functional.calibration.statistics', 'calibseg.calibrators'):
        assert name in modules
    assert any(name.startswith('calibseg.functional.saliency.') for name in modules)


def test_pure_core_imports_with_openmmlab_blocked():
    """At run time: every pure-core module imports in a fresh interpreter where OpenMMLab cannot be imported."""
    code = textwrap.dedent(f'''
        import importlib, pkgutil, sys
        BLOCKED = {sorted(OPENMMLAB)!r}
        class Block:
            def find_spec(self, name, path=None, target=None):
                top = name.split('.')[0]
                if top in BLOCKED or (top.startswith('mm') and top not in sys.stdlib_module_names):
                    raise ImportError('blocked for the layering test: ' + name)
        sys.meta_path.insert(0, Block())
        imported = []
        for root in {list(PURE_CORE)!r}:
            package = importlib.import_module(root)
            imported.append(root)
            for info in pkgutil.walk_packages(package.__path__, root + '.'):
                importlib.import_module(info.name)
                imported.append(info.name)
        leaked = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)
        assert not leaked, leaked
        print(len(imported))
    ''')
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, '-c', code], cwd=str(ROOT), env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[-1]) > 20  # the walk reached the whole core


# ----------------------------------------------------------------------------------------------- the checker
def _write(src: Path, files: Dict[str, str]) -> None:
    for rel, text in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


CLEAN = {
    'pkg/__init__.py': 'try:\n    import mmseg\nexcept ImportError:\n    mmseg = None\n',
    'pkg/functional/__init__.py': 'from .ops import op\n',
    'pkg/functional/ops.py': 'import math\nimport torch\nfrom ..utils.checks import check\n\ndef op():\n    pass\n',
    'pkg/functional/deep/__init__.py': '',
    'pkg/functional/deep/inner.py': 'from ...utils import checks\nfrom pkg.functional import ops\n',
    'pkg/calibrators/__init__.py': 'from pkg.functional.ops import op\n',
    'pkg/utils/__init__.py': '',
    'pkg/utils/checks.py': 'import mmap\n\ndef check():\n    pass\n',
    'pkg/utils/runner.py': 'import mmengine\n',
    'pkg/evaluation/__init__.py': 'from pkg.functional import ops\nimport mmengine\n',
    'pkg/engine/__init__.py': 'from pkg.evaluation import ops\n',
}


def test_checker_accepts_a_clean_package(tmp_path):
    _write(tmp_path, CLEAN)
    assert layering_violations(tmp_path, 'pkg') == []


def test_checker_resolves_relative_imports(tmp_path):
    _write(tmp_path, CLEAN)
    graph = import_graph(tmp_path, 'pkg')
    assert {'pkg.utils.checks', 'pkg.utils.checks.check', 'pkg.functional'} <= graph['pkg.functional.ops']
    assert {'pkg.utils', 'pkg.utils.checks', 'pkg.functional.ops', 'pkg.functional.deep'} \
        <= graph['pkg.functional.deep.inner']
    assert 'pkg' not in graph['pkg.functional.deep.inner']  # the root package is exempt (module docstring)


@pytest.mark.parametrize('files, expected', [
    # a direct import, inside a function, in a nested sub-package
    ({'pkg/functional/deep/inner.py': 'def f():\n    from mmcv.ops import nms\n'},
     ['pure core imports OpenMMLab: pkg.functional.deep.inner -> mmcv.ops']),
    # transitively, through a helper module outside the core: the chain is reported (and reaches the package
    # __init__ and the calibrators that import the module)
    ({'pkg/utils/checks.py': 'import mmengine.dist\n'},
     ['pure core imports OpenMMLab: pkg.calibrators -> pkg.functional.ops -> pkg.utils.checks -> mmengine.dist',
      'pure core imports OpenMMLab: pkg.functional -> pkg.functional.ops -> pkg.utils.checks -> mmengine.dist',
      'pure core imports OpenMMLab: pkg.functional.deep -> pkg.functional -> pkg.functional.ops -> '
      'pkg.utils.checks -> mmengine.dist',
      'pure core imports OpenMMLab: pkg.functional.deep.inner -> pkg.utils.checks -> mmengine.dist',
      'pure core imports OpenMMLab: pkg.functional.ops -> pkg.utils.checks -> mmengine.dist']),
    # through a parent package's __init__ (importing pkg.utils.checks runs pkg/utils/__init__.py)
    ({'pkg/utils/__init__.py': 'from .runner import *\n', 'pkg/functional/__init__.py': '',
      'pkg/calibrators/__init__.py': ''},
     ['pure core imports OpenMMLab: pkg.functional.deep.inner -> pkg.utils -> pkg.utils.runner -> mmengine',
      'pure core imports OpenMMLab: pkg.functional.ops -> pkg.utils.checks -> pkg.utils -> pkg.utils.runner -> '
      'mmengine']),
    # importlib with a literal name counts as an import
    ({'pkg/calibrators/__init__.py': 'import importlib\nimportlib.import_module("mmseg.registry")\n'},
     ['pure core imports OpenMMLab: pkg.calibrators -> mmseg.registry']),
    # evaluation -> engine, relative and transitive
    ({'pkg/evaluation/metric.py': 'from ..engine import hooks\n'},
     ['evaluation imports engine: pkg.evaluation.metric -> pkg.engine']),
    ({'pkg/evaluation/metric.py': 'from pkg.utils import glue\n', 'pkg/utils/glue.py': 'import pkg.engine.hooks\n'},
     ['evaluation imports engine: pkg.evaluation.metric -> pkg.utils.glue -> pkg.engine.hooks']),
    # anything importing the command lines
    ({'pkg/utils/runner.py': 'from tools.train import main\n'},
     ["pkg.utils.runner imports tools: ['tools.train', 'tools.train.main']"]),
])
def test_checker_finds_each_broken_rule(tmp_path, files, expected):
    _write(tmp_path, {**CLEAN, **files})
    assert layering_violations(tmp_path, 'pkg') == expected


def test_is_openmmlab():
    assert all(is_openmmlab(name) for name in ('mmengine', 'mmcv.ops', 'mmseg.models', 'mmdet', 'mmfoo', 'mim'))
    assert not any(is_openmmlab(name) for name in ('mmap', 'math', 'torch', 'numpy', 'calibseg.mm'))
