/**
 * Hovers that arrive while the server is still starting.
 *
 * Why: the language client registers its hover provider only once the server runs (after the
 * interpreter check and the server's start, a second or more), and VS Code asks the providers
 * registered at the moment of the hover — so a hover in the first seconds showed nothing,
 * not even later.  This provider answers only while the server is starting: it waits for
 * the start (at most {@link EARLY_HOVER_WAIT_MS}, or until the user moves on) and then asks
 * the server.  Once the server runs it returns nothing and the client's own provider answers,
 * so no hover is shown twice.
 */
import * as vscode from 'vscode';
import type { ServerManager } from '../common/server';

export const EARLY_HOVER_WAIT_MS = 15_000;

export function registerEarlyHover(server: ServerManager, log: vscode.LogOutputChannel): vscode.Disposable {
  return vscode.languages.registerHoverProvider({ language: 'python' }, {
    async provideHover(document, position, token) {
      if (server.state.phase !== 'starting') {
        return undefined;
      }
      if (!await server.whenRunning(EARLY_HOVER_WAIT_MS, token) || token.isCancellationRequested) {
        return undefined;
      }
      try {
        return await server.hover(document, position, token);
      } catch (error) {
        log.debug(`early hover: ${String(error)}`);
        return undefined;
      }
    },
  });
}
