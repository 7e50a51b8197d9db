/**
 * "pathfusion: Search Code": a QuickPick fed by the server's `pathfusion.search` as the user
 * types.
 *
 * Why each keystroke cancels the previous request: the server computes an embedding per
 * query, and a result for an old query is worthless; the request is cancelled on the wire
 * (`$/cancelRequest`) and its answer, if it still comes, is dropped.  Items are `alwaysShow`
 * because the QuickPick would otherwise filter the server's semantic matches by their label.
 */
import * as vscode from 'vscode';
import { COMMANDS, SECTION, SERVER_COMMANDS } from '../common/constants';
import { debounce } from '../common/debounce';
import { errorMessage } from '../common/log';
import type { ServerManager } from '../common/server';
import { searchResultCount } from '../common/settings';
import { parseResults, toItemView, type SearchResult } from './searchItems';

const QUERY_DELAY_MS = 200;
const PREVIEW_DELAY_MS = 150;
const TITLE = 'pathfusion: Search Code';

interface SearchItem extends vscode.QuickPickItem {
  readonly result: SearchResult;
}

function toQuickPickItem(result: SearchResult): SearchItem {
  const view = toItemView(result, (uri) => vscode.workspace.asRelativePath(vscode.Uri.parse(uri)));
  return { ...view, alwaysShow: true };
}

function toRange(result: SearchResult): vscode.Range {
  const { start, end } = result.range;
  return new vscode.Range(start.line, start.character, end.line, end.character);
}

/** Shows the function: cursor at its start, the whole function scrolled into view. */
async function reveal(result: SearchResult, preview: boolean): Promise<void> {
  const range = toRange(result);
  const editor = await vscode.window.showTextDocument(vscode.Uri.parse(result.uri), {
    selection: new vscode.Range(range.start, range.start), preview, preserveFocus: preview,
  });
  editor.revealRange(range, vscode.TextEditorRevealType.InCenterIfOutsideViewport);
}

/** Opens the search QuickPick; `initialQuery` (e.g. from a keybinding's `args`) is searched at once. */
function showSearch(server: ServerManager, log: vscode.LogOutputChannel, initialQuery?: string): void {
  const pick = vscode.window.createQuickPick<SearchItem>();
  pick.title = TITLE;
  pick.placeholder = 'Describe what a function does, or type its name';
  pick.matchOnDescription = false;
  pick.matchOnDetail = false;
  const k = searchResultCount(vscode.workspace.getConfiguration(SECTION).get('searchResults'));
  const original = vscode.window.activeTextEditor;
  let request: vscode.CancellationTokenSource | undefined;
  // An object, not two `let`s: the handlers below change it, which TypeScript's flow analysis
  // cannot see.
  const seen = { previewed: false, accepted: false };

  const search = async (query: string): Promise<void> => {
    request?.cancel();
    request?.dispose();
    request = undefined;
    if (query.trim() === '') {
      pick.items = [];
      pick.title = TITLE;
      pick.busy = false;
      return;
    }
    const current = new vscode.CancellationTokenSource();
    request = current;
    pick.busy = true;
    try {
      const answer = await server.executeCommand(SERVER_COMMANDS.search, [{ query, k }], current.token);
      if (current.token.isCancellationRequested) {
        return;
      }
      const results = parseResults(answer);
      pick.items = results.map(toQuickPickItem);
      pick.title = `${TITLE} — ${results.length === 0 ? 'no match' : `${results.length} results`}`;
    } catch (error) {
      if (current.token.isCancellationRequested) {
        return;
      }
      log.warn(`search "${query}" failed: ${errorMessage(error)}`);
      pick.items = [];
      pick.title = `${TITLE} — ${errorMessage(error)}`;
    } finally {
      if (request === current) {
        pick.busy = false;
      }
    }
  };
  const searchSoon = debounce((query: string) => void search(query), QUERY_DELAY_MS);
  const previewSoon = debounce((item: SearchItem) => {
    seen.previewed = true;
    reveal(item.result, true).catch((error: unknown) => { log.warn(`preview failed: ${errorMessage(error)}`); });
  }, PREVIEW_DELAY_MS);

  pick.onDidChangeValue((value) => {
    pick.busy = value.trim() !== '';
    searchSoon(value);
  });
  pick.onDidChangeActive(([item]) => {
    if (item !== undefined) {
      previewSoon(item);
    }
  });
  pick.onDidAccept(() => {
    const [item] = pick.selectedItems;
    if (item === undefined) {
      return;
    }
    seen.accepted = true;
    pick.hide();
    reveal(item.result, false).catch((error: unknown) => {
      void vscode.window.showErrorMessage(`pathfusion: cannot open ${item.result.uri}: ${errorMessage(error)}`);
    });
  });
  pick.onDidHide(() => {
    searchSoon.cancel();
    previewSoon.cancel();
    request?.cancel();
    request?.dispose();
    if (seen.previewed && !seen.accepted && original !== undefined) {
      // Escape after browsing the previews goes back to where the user was.
      void vscode.window.showTextDocument(original.document, {
        selection: original.selection, viewColumn: original.viewColumn,
      });
    }
    pick.dispose();
  });
  pick.show();
  if (initialQuery !== undefined && initialQuery.trim() !== '') {
    pick.value = initialQuery;
    void search(initialQuery);
  }
}

export function registerSearch(server: ServerManager, log: vscode.LogOutputChannel): vscode.Disposable {
  return vscode.commands.registerCommand(COMMANDS.searchCode, (query?: unknown) => {
    showSearch(server, log, typeof query === 'string' ? query : undefined);
  });
}
