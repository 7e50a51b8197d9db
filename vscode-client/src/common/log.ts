/**
 * The extension's output channel.  One channel on purpose: the extension's own messages, the
 * language client's, the protocol trace (`pathfusion.trace.server`) and the server's stderr
 * land in the same place, in order, which is what a bug report needs.
 */
import * as vscode from 'vscode';
import { DISPLAY_NAME } from './constants';

export function createLog(): vscode.LogOutputChannel {
  return vscode.window.createOutputChannel(DISPLAY_NAME, { log: true });
}

/**
 * The channel handed to the language client: writes go to `log`, and `append` — which the
 * client uses for the server's stderr only (its own messages use `appendLine`) — is also
 * passed to `onStderr`.  Disposing it leaves `log` open: the log outlives each server.
 */
export function serverChannel(log: vscode.LogOutputChannel, onStderr: (text: string) => void): vscode.OutputChannel {
  return {
    name: log.name,
    append: (value) => {
      onStderr(value);
      log.append(value);
    },
    appendLine: (value) => { log.appendLine(value); },
    replace: (value) => { log.replace(value); },
    clear: () => { log.clear(); },
    // OutputChannel still declares the deprecated `show(column, preserveFocus)` overload, whose
    // column VS Code ignores; only `preserveFocus` is forwarded.
    // eslint-disable-next-line @typescript-eslint/no-deprecated
    show: (columnOrPreserveFocus?: vscode.ViewColumn | boolean, preserveFocus?: boolean) => {
      log.show(typeof columnOrPreserveFocus === 'boolean' ? columnOrPreserveFocus : preserveFocus);
    },
    hide: () => { log.hide(); },
    dispose: () => undefined,
  };
}

/** The message of anything thrown, for the log and notifications. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
