import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  DETAIL_CHARS, detailText, isMethod, parseResults, previewTabsToClose, snippetLine, toItemView, type SearchResult,
} from '../src/features/searchItems';

const result: SearchResult = {
  uri: 'file:///ws/pkg/config.py',
  range: { start: { line: 41, character: 4 }, end: { line: 50, character: 0 } },
  name: 'load_config',
  qualname: 'Loader.load_config',
  score: 2.8761,
  snippet: 'def load_config(self, path):\n    """Read the TOML file at path."""\n    with open(path) as f:',
};

const relative = (uri: string): string => uri.replace('file:///ws/', '');

describe('toItemView (search result → QuickPick item)', () => {
  it('shows name, qualified name, file:line, score and snippet', () => {
    assert.deepEqual(toItemView(result, relative), {
      label: '$(symbol-method) load_config',
      description: 'Loader.load_config · pkg/config.py:42',
      detail: '2.88 · """Read the TOML file at path.""" with open(path) as f:',
      result,
    });
  });

  it('leaves the qualified name out when it is the name', () => {
    const view = toItemView({ ...result, qualname: 'load_config', snippet: '' }, relative);
    assert.equal(view.label, '$(symbol-function) load_config');
    assert.equal(view.description, 'pkg/config.py:42');
    assert.equal(view.detail, '2.88');
  });
});

describe('detailText', () => {
  it('shows the def line and the docstring line the server sends', () => {
    const multiLine = {
      ...result,
      snippet: 'def load_config(\n    self,\n    path,\n):\n    """Read the TOML file at path."""',
      signature: 'def load_config(self, path)',
      summary: 'Read the TOML file at path.',
    };
    assert.equal(detailText(multiLine), 'def load_config(self, path) — Read the TOML file at path.');
    assert.equal(toItemView(multiLine, relative).detail, '2.88 · def load_config(self, path) — Read the TOML file at path.');
    assert.equal(detailText({ ...multiLine, summary: '' }), 'def load_config(self, path)');
    assert.equal(detailText({ ...multiLine, signature: 'def f(' + 'x, '.repeat(100) + ')' }).length, DETAIL_CHARS);
  });

  it('falls back to the snippet for older servers', () => {
    assert.equal(detailText(result), '"""Read the TOML file at path.""" with open(path) as f:');
  });

  it('rejects results whose signature is not a string', () => {
    assert.deepEqual(parseResults([{ ...result, signature: 3 }]), []);
  });
});

describe('snippetLine', () => {
  it('skips the def line (decorators too) and collapses whitespace', () => {
    assert.equal(snippetLine('@cache\nasync def f(x):\n    """Doc."""\n\n    return x'), '"""Doc.""" return x');
  });

  it('keeps a snippet without a def line', () => {
    assert.equal(snippetLine('lambda x: x'), 'lambda x: x');
  });

  it('cuts long snippets with an ellipsis', () => {
    const line = snippetLine(`def f():\n    ${'x'.repeat(500)}`);
    assert.equal(line.length, DETAIL_CHARS);
    assert.ok(line.endsWith('…'));
  });
});

describe('isMethod', () => {
  it('follows the server\'s symbol kinds', () => {
    assert.equal(isMethod('A.m'), true);
    assert.equal(isMethod('f'), false);
    assert.equal(isMethod('f.<locals>.g'), false);
    assert.equal(isMethod('f.<locals>.A.m'), true);
  });
});

describe('parseResults', () => {
  it('keeps well-formed results and drops the rest', () => {
    assert.deepEqual(parseResults([result, { ...result, score: 'high' }, null, { uri: 'x' }]), [result]);
    assert.deepEqual(parseResults(null), []);
    assert.deepEqual(parseResults({ results: [result] }), []);
  });
});

describe('previewTabsToClose', () => {
  const tab = (uri: string | undefined, isPreview = true) => ({ uri, isPreview });

  it('closes the previews the search opened, nothing else', () => {
    const tabs = [tab('file:///a.py', false), tab('file:///b.py'), tab('file:///c.py'), tab(undefined), tab('file:///d.py', false)];
    const previewed = new Set(['file:///a.py', 'file:///b.py', 'file:///d.py']);
    // a.py was open before (the user's), c.py was never previewed, d.py was pinned.
    assert.deepEqual(previewTabsToClose(tabs, new Set(['file:///a.py']), previewed), [1]);
  });

  it('keeps a preview tab the user already had before searching', () => {
    assert.deepEqual(previewTabsToClose([tab('file:///b.py')], new Set(['file:///b.py']), new Set(['file:///b.py'])), []);
  });
});
