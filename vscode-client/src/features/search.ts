/**
 * "pathfusion: Search Code": a QuickPick fed by the server's `pathfusion.search` as the user
 * types.
 *
 * Why each keystroke cancels the previous request: the server computes an embedding per
 * query, and a result for an old query is worthless; the request is cancelled on the wire
 * (`$/cancelRequest`) and its answer, if it still comes, is dropped.  Items are `alwaysShow`
 * because the QuickPick would otherwise filter the server's semantic matches by their label.
 * A request that has been answered is forgotten at once, so closing the QuickPick cancels
 * only what is still running (cancelling an answered request makes the client log
 * "Cancel notification for unknown message id").  Escape after browsing previews closes the
 * preview tabs the search opened and goes back to where the user was.
 */
import * as vscode from 'vscode';
import { COMMANDS, SECTION, SERVER_COMMANDS } from '../common/constants';
import { debounce } from '../common/debounce';
import { errorMessage } from '../common/log';
import type { ServerManager } from '../common/server';
import { searchResultCount } from '../common/settings';
import { parseResults, previewTabsToClose, toItemView, type SearchResult } from './searchItems';

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

/** The text documents that have a tab now, as URI strings. */
function documentsWithTabs(): Set<string> {
  const uris = new Set<string>();
  for (const group of vscode.window.tabGroups.all) {
    for (const tab of group.tabs) {
      if (tab.input instanceof vscode.TabInputText) {
        uris.add(tab.input.uri.toString());
      }
    }
  }
  return uris;
}

/** Closes the preview tabs of `previewed` documents that had no tab in `openBefore`. */
async function closePreviews(openBefore: ReadonlySet<string>, previewed: ReadonlySet<string>): Promise<void> {
  const tabs = vscode.window.tabGroups.all.flatMap((group) => group.tabs);
  const views = tabs.map((tab) => ({
    uri: tab.input instanceof vscode.TabInputText ? tab.input.uri.toString() : undefined,
    isPreview: tab.isPreview,
  }));
  const close = previewTabsToClose(views, openBefore, previewed)
    .map((index) => tabs[index])
    .filter((tab): tab is vscode.Tab => tab !== undefined);
  if (close.length > 0) {
    await vscode.window.tabGroups.close(close, true);
  }
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
  const openBefore = documentsWithTabs();
  const previewedUris = new Set<string>();
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
        // Answered: nothing left to cancel on the wire.
        request = undefined;
        current.dispose();
        pick.busy = false;
      }
    }
  };
  const searchSoon = debounce((query: string) => void search(query), QUERY_DELAY_MS);
  const previewSoon = debounce((item: SearchItem) => {
    seen.previewed = true;
    previewedUris.add(vscode.Uri.parse(item.result.uri).toString());
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
    if (seen.previewed && !seen.accepted) {
      // Escape after browsing the previews: close them and go back to where the user was.
      void closePreviews(openBefore, previewedUris).then(async () => {
        if (original !== undefined) {
          await vscode.window.showTextDocument(original.document, {
            selection: original.selection, viewColumn: original.viewColumn,
          });
        }
      }).catch((error: unknown) => { log.warn(`closing the previews failed: ${errorMessage(error)}`); });
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
