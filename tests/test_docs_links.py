"""Every config a README or a docs page names exists, and every relative Markdown link resolves.

Names are read from README.md, docs/**/*.md and configs/**/README.md: full paths (``configs/<folder>/<name>.py``),
bare config names (``fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96.py``, resolved in the README's own folder or,
failing that, anywhere under configs/) and brace groups (``deeplabv3plus_r{50,101}-d8_...py``: every member).
"""
from __future__ import annotations

import glob
import itertools
import os.path as osp
import re

import pytest
from calibseg_testing import ROOT

DOCS = sorted({osp.join(ROOT, 'README.md'),
               *glob.glob(osp.join(ROOT, 'docs', '**', '*.md'), recursive=True),
               *glob.glob(osp.join(ROOT, 'configs', '**', 'README.md'), recursive=True)})
# a file name ending in .py, optionally after a folder path, with {a,b} groups allowed; names after a wildcard (*)
# are patterns and do not match
PY_REF = re.compile(r'(?<![\w/.{},*-])((?:[\w.-]+/)*)([\w{},-]+\.py)\b')
CONFIG_NAME = re.compile(r'^[a-z0-9]+_r\d+')  # {model}_{backbone}..., the grammar of every config name
LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')


def expand_braces(text: str) -> list[str]:
    """``a{1,2}b{x,y}`` -> ``[a1bx, a1by, a2bx, a2by]``."""
    parts = re.split(r'\{([^{}]*)\}', text)
    choices = [[p] if i % 2 == 0 else p.split(',') for i, p in enumerate(parts)]
    return [''.join(c) for c in itertools.product(*choices)]


def config_refs(text: str) -> list[tuple[str, str]]:
    """The (folder path, config name) pairs named in ``text``, brace groups expanded; format fields (``{}``,
    ``{m}``) make a name a pattern, which is skipped."""
    refs = []
    for folder, name in PY_REF.findall(text):
        if re.search(r'\{[^,}]*\}', name) or '{' in folder:
            continue
        refs += [(folder, n) for n in expand_braces(name)
                 if folder.startswith('configs/') or (not folder and CONFIG_NAME.match(n))]
    return refs


def resolve(doc: str, folder: str, name: str) -> bool:
    if folder:  # a path: relative to the repository root (commands run there) or to the document
        return any(osp.isfile(osp.join(base, folder, name)) for base in (ROOT, osp.dirname(doc)))
    if osp.isfile(osp.join(osp.dirname(doc), name)):
        return True
    return bool(glob.glob(osp.join(ROOT, 'configs', '**', name), recursive=True))


def test_the_pattern_finds_paths_bare_names_and_brace_groups():
    text = ('run `python tools/train.py configs/baseline/a_r18-d16_ce_1xb8-600it_demo-voc-96x96.py` or '
            '`deeplabv3plus_r{50,101}-d8_ce_4xb4-20k_voc12aug-512x512.py`; every `configs/*/b_r18_*.py` and '
            "f'c_r18-d16_{m}_1xb8.py' are patterns")
    assert config_refs(text) == [
        ('configs/baseline/', 'a_r18-d16_ce_1xb8-600it_demo-voc-96x96.py'),
        ('', 'deeplabv3plus_r50-d8_ce_4xb4-20k_voc12aug-512x512.py'),
        ('', 'deeplabv3plus_r101-d8_ce_4xb4-20k_voc12aug-512x512.py'),
    ]


def test_a_missing_config_is_found(tmp_path):
    doc = tmp_path / 'README.md'
    doc.write_text('`configs/baseline/fcn_r18-os16_ce_600it_demo-voc12aug-96x96.py`')
    [(folder, name)] = config_refs(doc.read_text())
    assert not resolve(str(doc), folder, name)
    assert resolve(str(doc), 'configs/baseline/', 'fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96.py')


def test_the_docs_name_configs():
    named = {name for doc in DOCS for _, name in config_refs(open(doc, encoding='utf-8').read())}
    assert len(named) >= 20  # the pattern still matches the way the READMEs write config names


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: osp.relpath(p, ROOT))
def test_every_named_config_exists(doc):
    text = open(doc, encoding='utf-8').read()
    missing = [folder + name for folder, name in config_refs(text) if not resolve(doc, folder, name)]
    assert not missing, f'{osp.relpath(doc, ROOT)} names configs that do not exist: {missing}'


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: osp.relpath(p, ROOT))
def test_every_relative_link_resolves(doc):
    text = open(doc, encoding='utf-8').read()
    targets = [t.split('#')[0] for t in LINK.findall(text) if not re.match(r'[a-z]+:|#', t)]
    missing = [t for t in targets if not osp.exists(osp.join(osp.dirname(doc), t))]
    assert not missing, f'{osp.relpath(doc, ROOT)} links files that do not exist: {missing}'
