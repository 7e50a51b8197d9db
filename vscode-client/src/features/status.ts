/**
 * The status-bar item and the "Show Status", "Reindex Workspace" and "Cancel Indexing"
 * commands.
 *
 * Why the item asks the server again while an index is being opened: the server announces a
 * progress only once the index is open and the run starts; until then (and for a client that
 * missed the `end`), `pathfusion.status` is the only source, so it is polled every few seconds
 * while a folder is `opening` or `indexing` and no progress is shown.  Every answer also
 * rewrites the "Show Status" document while it is open, so it never shows a stale run.
 */
import * as vscode from 'vscode';
import { COMMANDS, SERVER_COMMANDS } from '../common/constants';
import { errorMessage } from '../common/log';
import type { ProgressTracker } from '../common/progress';
import type { ServerManager } from '../common/server';
import {
  isIndexBusy, parseIndex, parseStatus, reindexSummary, statusBarView, statusMarkdown, type ServerStatus,
} from './statusView';

const POLL_MS = 2000;
const STATUS_URI = vscode.Uri.parse('pathfusion-status:/pathfusion%20status.md');

export class StatusFeature implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('pathfusion.status', vscode.StatusBarAlignment.Right, 100);
  private readonly documentChanged = new vscode.EventEmitter<vscode.Uri>();
  private readonly disposables: { dispose(): unknown }[] = [];
  private status: ServerStatus | undefined;
  private document = '';
  /** The "Show Status" document has been shown and not closed since. */
  private documentOpen = false;
  private poll: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly server: ServerManager,
    private readonly progress: ProgressTracker,
    private readonly log: vscode.LogOutputChannel,
  ) {
    this.item.name = 'pathfusion';
    const stopListening = progress.onDidChange((_active, ended) => {
      this.render();
      if (ended !== undefined) {
        void this.refresh();
      }
    });
    this.disposables.push(
      this.item,
      this.documentChanged,
      { dispose: stopListening },
      server.onDidChangePhase(({ phase }) => {
        this.status = undefined;
        this.render();
        if (phase === 'running') {
          void this.refresh();
        }
      }),
      vscode.workspace.registerTextDocumentContentProvider(STATUS_URI.scheme, {
        onDidChange: this.documentChanged.event,
        provideTextDocumentContent: () => this.document,
      }),
      vscode.workspace.onDidCloseTextDocument((closed) => {
        if (closed.uri.toString() === STATUS_URI.toString()) {
          this.documentOpen = false;
        }
      }),
      vscode.commands.registerCommand(COMMANDS.showStatus, () => this.showStatus()),
      vscode.commands.registerCommand(COMMANDS.reindexWorkspace, () => this.reindex()),
      vscode.commands.registerCommand(COMMANDS.cancelIndexing, () => { this.cancelIndexing(); }),
    );
    this.render();
  }

  dispose(): void {
    clearTimeout(this.poll);
    for (const disposable of this.disposables) {
      disposable.dispose();
    }
  }

  /** Asks the server for its status and shows it; returns it (undefined when not running). */
  private async refresh(): Promise<ServerStatus | undefined> {
    clearTimeout(this.poll);
    this.poll = undefined;
    if (this.server.state.phase !== 'running') {
      return undefined;
    }
    try {
      this.status = parseStatus(await this.server.executeCommand(SERVER_COMMANDS.status, []));
    } catch (error) {
      this.log.warn(`pathfusion.status failed: ${errorMessage(error)}`);
      this.status = undefined;
    }
    this.render();
    if (this.documentOpen && this.status !== undefined) {
      this.updateDocument(this.status);
    }
    if (isIndexBusy(this.status) && this.progress.active === undefined) {
      this.poll = setTimeout(() => void this.refresh(), POLL_MS);
    }
    return this.status;
  }

  private render(): void {
    const { phase, failure } = this.server.state;
    const view = statusBarView(phase, this.status, this.progress.active, failure);
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.command = view.command;
    this.item.backgroundColor = view.severity === 'normal' ? undefined
      : new vscode.ThemeColor(view.severity === 'error' ? 'statusBarItem.errorBackground' : 'statusBarItem.warningBackground');
    this.item.show();
  }

  private async showStatus(): Promise<void> {
    const status = await this.refresh();
    if (status === undefined) {
      const { failure } = this.server.state;
      const choice = await vscode.window.showWarningMessage(
        `pathfusion: ${failure ?? 'the server is not running'}.`, 'Show Log', 'Restart Server');
      if (choice !== undefined) {
        await vscode.commands.executeCommand(choice === 'Show Log' ? COMMANDS.showLog : COMMANDS.restartServer);
      }
      return;
    }
    this.updateDocument(status);
    this.documentOpen = true;
    try {
      await vscode.commands.executeCommand('markdown.showPreview', STATUS_URI);
    } catch {
      // No markdown extension: the source is readable too.
      await vscode.window.showTextDocument(STATUS_URI, { preview: true });
    }
  }

  private updateDocument(status: ServerStatus): void {
    this.document = statusMarkdown(status, this.server.interpreterCommand ?? '?');
    this.documentChanged.fire(STATUS_URI);
  }

  private async reindex(): Promise<void> {
    try {
      const answer = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: 'pathfusion: reindexing', cancellable: true },
        async (report, token) => {
          let done = 0;
          const stopListening = this.progress.onDidChange((active) => {
            if (active?.percentage !== undefined && active.percentage >= done) {
              report.report({ increment: active.percentage - done, message: active.message });
              done = active.percentage;
            }
          });
          const cancelling = token.onCancellationRequested(() => { this.cancelIndexing(); });
          try {
            return await this.server.executeCommand(SERVER_COMMANDS.reindex, []);
          } finally {
            stopListening();
            cancelling.dispose();
          }
        });
      const index = parseIndex(answer);
      if (index !== undefined) {
        void vscode.window.showInformationMessage(`pathfusion: ${reindexSummary(index)}`);
      }
    } catch (error) {
      void vscode.window.showErrorMessage(`pathfusion: reindexing failed: ${errorMessage(error)}`);
    }
    await this.refresh();
  }

  private cancelIndexing(): void {
    const active = this.progress.active;
    if (active === undefined) {
      void vscode.window.showInformationMessage('pathfusion: nothing is being indexed.');
      return;
    }
    this.server.cancelProgress(active.token);
  }
}
