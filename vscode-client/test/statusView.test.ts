import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { COMMANDS } from '../src/common/constants';
import {
  isIndexBusy, lastRunText, modelLabel, parseIndex, parseStatus, reindexSummary, statusBarView, statusMarkdown,
  type FolderStatus, type ServerStatus,
} from '../src/features/statusView';

function folder(data: Partial<FolderStatus> = {}): FolderStatus {
  return { root: '/ws', state: 'ready', error: null, files: 12, functions: 340, ...data };
}

function status(folders: FolderStatus[] = [folder()], extra: Partial<ServerStatus> = {}): ServerStatus {
  return {
    name: 'pathfusion', version: '0.1.0', model_loaded: true,
    model: { name: 'code2vec', providers: ['CPUExecutionProvider'] }, models_dir: '/m', model_error: null,
    index: { embedder: 'all-MiniLM-L6-v2-int8', embedder_error: null, folders },
    ...extra,
  };
}

describe('statusBarView', () => {
  it('shows the client phases', () => {
    assert.equal(statusBarView('starting').text, '$(loading~spin) pathfusion');
    const failed = statusBarView('failed', undefined, undefined, 'no server');
    assert.equal(failed.severity, 'error');
    assert.equal(failed.command, COMMANDS.showLog);
    assert.match(failed.tooltip, /no server/);
    assert.equal(statusBarView('stopped').command, COMMANDS.restartServer);
  });

  it('shows an indexing run with its percentage; a click cancels it', () => {
    const view = statusBarView('running', status(), {
      token: 't', title: 'pathfusion: indexing', percentage: 42.4, message: '5/12 files', cancellable: true,
    });
    assert.equal(view.text, '$(sync~spin) pathfusion 42%');
    assert.equal(view.command, COMMANDS.cancelIndexing);
    assert.match(view.tooltip, /5\/12 files/);
  });

  it('shows the indexed functions when ready; a click searches', () => {
    const view = statusBarView('running', status([folder(), folder({ root: '/b', files: 3, functions: 10 })]));
    assert.equal(view.text, '$(search) pathfusion: 350 functions');
    assert.equal(view.command, COMMANDS.searchCode);
    assert.match(view.tooltip, /350 functions in 15 files/);
  });

  it('mentions a cancelled run', () => {
    assert.match(statusBarView('running', status([folder({ state: 'cancelled' })])).tooltip, /Reindex Workspace/);
  });

  it('warns about model, embedder and folder errors', () => {
    const view = statusBarView('running', status([folder({ state: 'error', error: 'cannot open the index' })],
      { model_error: 'bad manifest', index: { embedder: null, embedder_error: 'no embedder', folders: [] } }));
    assert.equal(view.severity, 'warning');
    assert.match(view.tooltip, /bad manifest/);
    assert.match(view.tooltip, /no embedder/);
  });

  it('says when the index is being prepared, or when there is nothing to index', () => {
    assert.match(statusBarView('running', status([folder({ state: 'opening' })])).tooltip, /preparing/);
    assert.match(statusBarView('running', status([])).tooltip, /no workspace folder/);
    assert.equal(statusBarView('running').text, '$(check) pathfusion');
  });
});

describe('status answers', () => {
  it('parses the documented shapes only', () => {
    assert.ok(parseStatus(status()));
    assert.equal(parseStatus({ name: 'x' }), undefined);
    assert.equal(parseStatus(null), undefined);
    assert.ok(parseIndex(status().index));
    assert.equal(parseIndex([]), undefined);
  });

  it('isIndexBusy while a folder opens or indexes', () => {
    assert.equal(isIndexBusy(status([folder({ state: 'indexing' })])), true);
    assert.equal(isIndexBusy(status()), false);
    assert.equal(isIndexBusy(undefined), false);
  });

  it('reindexSummary counts functions and files, and says what went wrong', () => {
    assert.equal(reindexSummary(status().index), '340 functions in 12 files indexed.');
    assert.equal(reindexSummary(status([folder({ state: 'cancelled' }), folder({ state: 'off', files: 0, functions: 0 })]).index),
      'indexing cancelled; 340 functions in 12 files indexed (1 folder not indexed: see "pathfusion: Show Status").');
  });
});

describe('statusMarkdown', () => {
  it('lists the interpreter, models, and one table row per folder', () => {
    const run = { seconds: 3.25, scanned: 12, changed: 2, removed: 0, embedded: 30, cached: 1 };
    const text = statusMarkdown(status([folder({ root: '/w|s', last_run: run })]), '/venv/bin/python');
    assert.match(text, /^# pathfusion 0\.1\.0/);
    assert.match(text, /Interpreter: `\/venv\/bin\/python`/);
    assert.match(text, /Name model: code2vec \(syntax paths of the function\) on CPU\n/);
    assert.match(text, /\| \/w\\\|s \| ready \| 12 \| 340 \| 2 files changed, 31 functions embedded in 3\.3 s \| — \|/);
    assert.doesNotMatch(text, /## Problems/);
  });

  it('says a run that changed nothing is up to date, not "0.0 s"', () => {
    assert.equal(lastRunText({ seconds: 0.004, scanned: 12, changed: 0, removed: 0, embedded: 0, cached: 0 }),
      'up to date (12 files checked, < 0.1 s)');
    assert.equal(lastRunText({ seconds: 1.5, changed: 0, removed: 1, embedded: 0 }), '1 file changed in 1.5 s');
    assert.equal(lastRunText({ seconds: 2, cancelled: true }), 'cancelled after 2.0 s');
    assert.equal(lastRunText(null), '—');
    assert.equal(lastRunText({}), '—');
  });

  it('names the naming model in user terms, not internal ids', () => {
    assert.equal(modelLabel('fusion:attention'), 'code2vec fused with the LLM embedding (fusion variant "attention")');
    assert.equal(modelLabel('fusion:llm'), 'LLM embedding of the function (fusion variant "llm")');
    assert.doesNotMatch(statusMarkdown(status([], { model: { name: 'fusion:concat', providers: [] } }), 'p'), /fusion:concat/);
    assert.equal(modelLabel(undefined), 'loaded');
    assert.equal(modelLabel('naming head'),
      'names written from the LLM\'s reading of the function (generative naming head)');
  });

  it('lists problems', () => {
    const text = statusMarkdown(status([], { model_loaded: false, model: null, model_error: 'bad manifest' }), 'python3');
    assert.match(text, /not loaded — bad manifest/);
    assert.match(text, /No workspace folder is indexed/);
    assert.match(text, /## Problems\n\n- Name suggestions are off: bad manifest/);
  });
});
