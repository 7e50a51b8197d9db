import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  CLIENT_ONLY_KEYS, DEFAULT_SEARCH_RESULTS, expandVariables, forServer, interpreterSetting, searchResultCount,
} from '../src/common/settings';

const vars = { workspaceFolder: '/ws', userHome: '/home/me' };

describe('expandVariables', () => {
  it('expands ${workspaceFolder}, ${userHome} and a leading ~', () => {
    assert.equal(expandVariables('${workspaceFolder}/.venv/bin/python', vars), '/ws/.venv/bin/python');
    assert.equal(expandVariables('${userHome}/models', vars), '/home/me/models');
    assert.equal(expandVariables('~/models', vars), '/home/me/models');
    assert.equal(expandVariables('~', vars), '/home/me');
  });

  it('leaves other text alone', () => {
    assert.equal(expandVariables('/opt/a~b/${env:X}', vars), '/opt/a~b/${env:X}');
    assert.equal(expandVariables('~user/x', vars), '~user/x');
  });

  it('keeps ${workspaceFolder} without a workspace folder', () => {
    assert.equal(expandVariables('${workspaceFolder}/m', { userHome: '/h' }), '${workspaceFolder}/m');
  });
});

describe('forServer (settings → initializationOptions and workspace/configuration)', () => {
  it('drops the keys only the extension reads', () => {
    const section = {
      interpreter: ['/usr/bin/python3'], searchResults: 30, trace: { server: 'verbose' },
      topK: 3, device: 'cpu', exclude: ['build/**'], modelsDir: null, hoverMinConfidence: 0.4,
    };
    assert.deepEqual(forServer(section, vars), {
      topK: 3, device: 'cpu', exclude: ['build/**'], modelsDir: null, hoverMinConfidence: 0.4,
    });
    for (const key of CLIENT_ONLY_KEYS) {
      assert.ok(!(key in (forServer(section, vars) as object)), key);
    }
  });

  it('expands variables in the path settings only', () => {
    assert.deepEqual(
      forServer({ modelsDir: '${workspaceFolder}/models', llmModelPath: '~/hf/minilm', llmBackend: '~' }, vars),
      { modelsDir: '/ws/models', llmModelPath: '/home/me/hf/minilm', llmBackend: '~' });
  });

  it('passes unknown keys and bad values on, for the server to explain', () => {
    assert.deepEqual(forServer({ topk: 'many', typo: 1 }, vars), { topk: 'many', typo: 1 });
  });

  it('passes anything that is not an object through', () => {
    assert.equal(forServer(null, vars), null);
    assert.equal(forServer(undefined, vars), undefined);
    assert.deepEqual(forServer([1], vars), [1]);
  });
});

describe('interpreterSetting', () => {
  it('takes a string as one path', () => {
    assert.deepEqual(interpreterSetting(' /opt/py/bin/python ', vars), ['/opt/py/bin/python']);
  });

  it('takes an array as executable and arguments, expanding variables', () => {
    assert.deepEqual(interpreterSetting(['${workspaceFolder}/.venv/bin/python', '-X', 'utf8'], vars),
      ['/ws/.venv/bin/python', '-X', 'utf8']);
  });

  it('treats empty and malformed values as not configured', () => {
    assert.deepEqual(interpreterSetting('', vars), []);
    assert.deepEqual(interpreterSetting([], vars), []);
    assert.deepEqual(interpreterSetting(['  '], vars), []);
    assert.deepEqual(interpreterSetting(undefined, vars), []);
    assert.deepEqual(interpreterSetting(42, vars), []);
    assert.deepEqual(interpreterSetting([3, 'python3'], vars), ['python3']);
  });
});

describe('searchResultCount', () => {
  it('clamps to 1..200 and rounds', () => {
    assert.equal(searchResultCount(0), 1);
    assert.equal(searchResultCount(500), 200);
    assert.equal(searchResultCount(12.4), 12);
  });

  it('falls back to the default', () => {
    assert.equal(searchResultCount('ten'), DEFAULT_SEARCH_RESULTS);
    assert.equal(searchResultCount(Number.NaN), DEFAULT_SEARCH_RESULTS);
    assert.equal(searchResultCount(undefined), DEFAULT_SEARCH_RESULTS);
  });
});
