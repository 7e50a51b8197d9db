/**
 * Names shared by the extension and the server.  The server's command ids live here too
 * because the client calls them with `workspace/executeCommand`; the extension's own
 * command ids differ from them on purpose: vscode-languageclient registers every command
 * the server advertises as a VS Code command of the same id, and two registrations of one
 * id would clash.
 */

/** The settings section, as in server/settings.py `SECTION`. */
export const SECTION = 'pathfusion';
export const DISPLAY_NAME = 'pathfusion';

/** Commands the server implements (server/lsp.py). */
export const SERVER_COMMANDS = {
  search: 'pathfusion.search',
  reindex: 'pathfusion.reindex',
  status: 'pathfusion.status',
} as const;

/** Commands the extension contributes (package.json `contributes.commands`). */
export const COMMANDS = {
  searchCode: 'pathfusion.searchCode',
  reindexWorkspace: 'pathfusion.reindexWorkspace',
  showStatus: 'pathfusion.showStatus',
  restartServer: 'pathfusion.restartServer',
  showLog: 'pathfusion.showLog',
  cancelIndexing: 'pathfusion.cancelIndexing',
} as const;
