// The checks of the VS Code end-to-end test (`make e2e-vscode`), run inside the editor through
// the VS Code API: the pathfusion extension activates, the hover on a badly named function
// lists name suggestions, a "Rename `handle` → `…`" code action resolves and applies (in both
// files, which must still compile with no new pyflakes message), the search returns results,
// reindexing ends with every folder ready, and a wrong `pathfusion.interpreter` restarts the
// server into a clear error.  Between checks the UI is left in a state worth a screenshot
// (hover shown, status, search QuickPick open, error notification) and `stage` says so;
// e2e/drive.mjs takes the screenshots and reads the DOM.  Does nothing outside a workspace
// holding .vscode/pathfusion-e2e.json, which names the result file and the repository (for
// tests/rename_checks.py).
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const vscode = require('vscode');

const PATHFUSION_ID = 'pathfusion.pathfusion';
const WAIT_MS = 240_000;
const SEARCH_QUERY = 'read a JSON file';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Calls `probe` until it returns something other than undefined (models load, the index fills). */
async function until(what, probe) {
  const deadline = Date.now() + WAIT_MS;
  let last;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) {
        return value;
      }
    } catch (error) {
      last = error;
    }
    await sleep(1000);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ''}`);
}

/**
 * Fails unless the renamed files still compile and pyflakes reports nothing in them that it
 * did not report before (a rename onto a name already bound — `json` under `import json` —
 * replaces the text just as well and breaks the module).  Runs tests/rename_checks.py of the
 * repository with the server's interpreter.
 */
function checkRenamed(repo, before, after, oldName, newName) {
  const interpreter = vscode.workspace.getConfiguration('pathfusion').get('interpreter');
  const script = [
    'import json, sys',
    'sys.path.insert(0, sys.argv[1])',
    'from tests.rename_checks import assert_clean_rename',
    'data = json.load(sys.stdin)',
    'assert_clean_rename(data["before"], data["after"], data["old"], data["new"])',
  ].join('\n');
  try {
    execFileSync(interpreter, ['-c', script, repo], {
      input: JSON.stringify({ before, after, old: oldName, new: newName }), encoding: 'utf8', timeout: 60_000,
    });
  } catch (error) {
    throw new Error(`the renamed code is broken (${interpreter}):\n${error.stderr || error}`, { cause: error });
  }
}

function hoverText(hovers) {
  return (hovers || []).flatMap((hover) => hover.contents)
    .map((content) => (typeof content === 'string' ? content : content.value)).join('\n');
}

class Report {
  constructor(file) {
    this.file = file;
    this.data = { stage: 'started', checks: {}, started: new Date().toISOString() };
    this.write();
  }

  write() {
    fs.writeFileSync(`${this.file}.tmp`, JSON.stringify(this.data, null, 1));
    fs.renameSync(`${this.file}.tmp`, this.file);
  }

  stage(name) {
    this.data.stage = name;
    this.write();
  }

  async check(name, run) {
    const start = Date.now();
    try {
      this.data.checks[name] = { ok: true, detail: await run() };
    } catch (error) {
      this.data.checks[name] = { ok: false, error: String((error && error.stack) || error) };
    }
    this.data.checks[name].seconds = (Date.now() - start) / 1000;
    this.write();
    return this.data.checks[name].ok;
  }
}

async function run(folder, report, repo) {
  const storeUri = vscode.Uri.joinPath(folder.uri, 'store.py');
  const appUri = vscode.Uri.joinPath(folder.uri, 'app.py');

  await report.check('activate', async () => {
    const extension = vscode.extensions.getExtension(PATHFUSION_ID);
    if (!extension) {
      throw new Error(`${PATHFUSION_ID} is not installed`);
    }
    await extension.activate();
    return { version: extension.packageJSON.version };
  });

  const document = await vscode.workspace.openTextDocument(storeUri);
  const editor = await vscode.window.showTextDocument(document);
  const position = document.positionAt(document.getText().indexOf('def handle(') + 'def '.length);

  await report.check('hover', async () => {
    const text = await until('a hover with name suggestions', async () => {
      const found = hoverText(await vscode.commands.executeCommand('vscode.executeHoverProvider', storeUri, position));
      return found.includes('suggested names') ? found : undefined;
    });
    return { text };
  });
  // The same hover in the UI, for the screenshot and the DOM check of drive.mjs (the editor
  // needs the keyboard focus for editor.action.showHover).
  await vscode.window.showTextDocument(document, { preserveFocus: false });
  await vscode.commands.executeCommand('workbench.action.focusActiveEditorGroup');
  editor.selection = new vscode.Selection(position, position);
  await vscode.commands.executeCommand('editor.action.showHover');
  report.stage('hover');
  await sleep(4000);
  await vscode.commands.executeCommand('editor.action.hideHover').then(undefined, () => undefined);

  await report.check('rename', async () => {
    const actions = await until('rename code actions', async () => {
      const all = await vscode.commands.executeCommand('vscode.executeCodeActionProvider', storeUri,
        new vscode.Range(position, position), vscode.CodeActionKind.RefactorRewrite.value, 10);
      const renames = (all || []).filter((action) => action.title.startsWith('Rename `handle` → '));
      return renames.length > 0 ? renames : undefined;
    });
    const action = actions[0];
    if (!action.edit) {
      throw new Error(`"${action.title}" was not resolved into an edit (disabled: ${JSON.stringify(action.disabled)})`);
    }
    const newName = /→ `([^`]+)`/.exec(action.title)[1];
    const before = { 'store.py': document.getText(), 'app.py': (await vscode.workspace.openTextDocument(appUri)).getText() };
    if (!(await vscode.workspace.applyEdit(action.edit))) {
      throw new Error(`applyEdit refused "${action.title}"`);
    }
    const store = document.getText();
    const app = (await vscode.workspace.openTextDocument(appUri)).getText();
    if (!store.includes(`def ${newName}(`) || store.includes('def handle(')) {
      throw new Error(`store.py was not renamed:\n${store}`);
    }
    if (!app.includes(`import Store, ${newName}, save_json`) || !app.includes(`settings = ${newName}(path)`)) {
      throw new Error(`app.py was not renamed:\n${app}`);
    }
    checkRenamed(repo, before, { 'store.py': store, 'app.py': app }, 'handle', newName);
    await vscode.workspace.saveAll(false);
    return { offered: actions.map((a) => a.title), applied: action.title, appPy: app };
  });

  await report.check('search', async () => {
    const results = await until('search results', async () => {
      const found = await vscode.commands.executeCommand('pathfusion.search', { query: SEARCH_QUERY, k: 5 });
      return Array.isArray(found) && found.length > 0 ? found : undefined;
    });
    const top = results.map((r) => ({ name: r.name, qualname: r.qualname, score: r.score, file: path.basename(vscode.Uri.parse(r.uri).fsPath) }));
    if (!top.some((r) => r.file === 'store.py')) {
      throw new Error(`no result from store.py: ${JSON.stringify(top)}`);
    }
    return { query: SEARCH_QUERY, results: top };
  });

  await report.check('reindex', async () => {
    await vscode.commands.executeCommand('pathfusion.reindexWorkspace');
    const status = await vscode.commands.executeCommand('pathfusion.status');
    const states = status.index.folders.map((folder) => folder.state);
    if (!states.every((state) => state === 'ready')) {
      throw new Error(`folders not ready after reindexing: ${JSON.stringify(status.index)}`);
    }
    return status;
  });

  // "pathfusion: Show Status" (a markdown preview), for a screenshot.
  await vscode.commands.executeCommand('pathfusion.showStatus');
  await sleep(3000);
  report.stage('status');
  await sleep(3000);

  // The QuickPick of "pathfusion: Search Code", for the screenshot and the DOM check.
  void vscode.commands.executeCommand('pathfusion.searchCode', SEARCH_QUERY);
  await sleep(3000);
  report.stage('search');
  await sleep(4000);
  await vscode.commands.executeCommand('workbench.action.closeQuickOpen');

  // A wrong interpreter: the extension restarts the server and must say what is wrong.
  await report.check('badInterpreter', async () => {
    await vscode.workspace.getConfiguration('pathfusion')
      .update('interpreter', '/nonexistent/bin/python3', vscode.ConfigurationTarget.Workspace);
    await sleep(5000);
    return { interpreter: '/nonexistent/bin/python3' };
  });
  report.stage('error');
  await sleep(4000);
}

function activate() {
  const folder = (vscode.workspace.workspaceFolders || [])[0];
  const configFile = folder && path.join(folder.uri.fsPath, '.vscode', 'pathfusion-e2e.json');
  if (!configFile || !fs.existsSync(configFile)) {
    return;
  }
  const config = JSON.parse(fs.readFileSync(configFile, 'utf8'));
  const report = new Report(config.resultFile);
  run(folder, report, config.repo)
    .catch((error) => { report.data.error = String((error && error.stack) || error); })
    .finally(() => { report.stage('done'); });
}

module.exports = { activate };
