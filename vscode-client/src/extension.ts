/**
 * The pathfusion extension: runs the pathfusion language server for Python files and adds
 * semantic code search, indexing commands and a status-bar item on top of it.
 *
 * Why only some changes restart the server: every `pathfusion.*` setting the server reads is
 * applied live (the client sends `workspace/didChangeConfiguration`, the server pulls the
 * section again), but the interpreter is the server process itself, so a change of
 * `pathfusion.interpreter` or of the Python extension's active environment restarts it —
 * debounced, because one edit of settings.json or one environment switch fires several events.
 * A change of workspace folders restarts it only when it changes the interpreter
 * ({@link ServerManager.foldersChanged}); the server follows the folders by itself.
 */
import * as vscode from 'vscode';
import { COMMANDS, SECTION } from './common/constants';
import { debounce } from './common/debounce';
import { createLog, errorMessage } from './common/log';
import { ProgressTracker } from './common/progress';
import { onDidChangeActiveInterpreter } from './common/python';
import { ServerManager, settingVariables } from './common/server';
import { interpreterSetting } from './common/settings';
import { registerEarlyHover } from './features/earlyHover';
import { registerSearch } from './features/search';
import { StatusFeature } from './features/status';

const RESTART_DELAY_MS = 500;

let server: ServerManager | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const log = createLog();
  const progress = new ProgressTracker();
  server = new ServerManager(context.extensionPath, log, progress);
  const manager = server;
  const restartSoon = debounce((reason: string) => void manager.restart(reason), RESTART_DELAY_MS);
  const foldersChangedSoon = debounce(() => void manager.foldersChanged(), RESTART_DELAY_MS);

  context.subscriptions.push(
    log,
    manager,
    new StatusFeature(manager, progress, log),
    registerSearch(manager, log),
    registerEarlyHover(manager, log),
    vscode.commands.registerCommand(COMMANDS.restartServer, () => manager.restart('restart command')),
    vscode.commands.registerCommand(COMMANDS.showLog, () => { log.show(); }),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (event.affectsConfiguration(`${SECTION}.interpreter`)) {
        restartSoon('pathfusion.interpreter changed');
      }
    }),
    vscode.workspace.onDidChangeWorkspaceFolders(() => { foldersChangedSoon(); }),
    { dispose: () => { restartSoon.cancel(); foldersChangedSoon.cancel(); } },
  );

  try {
    const listening = await onDidChangeActiveInterpreter(() => {
      if (interpreterSetting(vscode.workspace.getConfiguration(SECTION).get('interpreter'), settingVariables()).length === 0) {
        restartSoon('the active Python environment changed');
      }
    }, log);
    if (listening !== undefined) {
      context.subscriptions.push(listening);
    }
  } catch (error) {
    log.warn(`not following the Python extension's environment: ${errorMessage(error)}`);
  }
  await manager.restart('activation');
}

export async function deactivate(): Promise<void> {
  await server?.stop();
  server = undefined;
}
