/**
 * Follows the server's `window/workDoneProgress` (the indexing runs) for the status bar and
 * the "Reindex Workspace" notification.
 *
 * Why not the language client's own progress UI: it shows a window progress that cannot be
 * cancelled, while the server's runs are cancellable.  The client hands every progress
 * message to the `handleWorkDoneProgress` middleware first; the extension feeds them to a
 * {@link ProgressTracker} and lets only `end` through, so that the client releases its own
 * bookkeeping.  Pure (no `vscode` import).
 */

export type ProgressToken = number | string;

/** The `value` of a `$/progress` notification for a work-done token. */
export type WorkDoneProgressValue =
  | { kind: 'begin'; title: string; message?: string; percentage?: number; cancellable?: boolean }
  | { kind: 'report'; message?: string; percentage?: number; cancellable?: boolean }
  | { kind: 'end'; message?: string };

export interface ActiveProgress {
  readonly token: ProgressToken;
  readonly title: string;
  readonly message?: string;
  readonly percentage?: number;
  readonly cancellable: boolean;
}

type Listener = (active: ActiveProgress | undefined, ended?: { title: string; message?: string }) => void;

/** The runs in progress; the most recently begun one is "the" active run. */
export class ProgressTracker {
  private readonly runs = new Map<ProgressToken, ActiveProgress>();
  private readonly listeners = new Set<Listener>();

  /** The run to show (the latest begun), if any. */
  get active(): ActiveProgress | undefined {
    return [...this.runs.values()].at(-1);
  }

  /** Calls `listener` after every change; returns the function that unsubscribes. */
  onDidChange(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  handle(token: ProgressToken, value: WorkDoneProgressValue): void {
    const run = this.runs.get(token);
    switch (value.kind) {
      case 'begin':
        this.runs.set(token, {
          token, title: value.title, message: value.message, percentage: value.percentage,
          cancellable: value.cancellable === true,
        });
        this.emit();
        return;
      case 'report':
        if (run === undefined) {
          return;
        }
        this.runs.set(token, {
          ...run,
          message: value.message ?? run.message,
          percentage: value.percentage ?? run.percentage,
          cancellable: value.cancellable ?? run.cancellable,
        });
        this.emit();
        return;
      case 'end':
        if (run === undefined) {
          return;
        }
        this.runs.delete(token);
        this.emit({ title: run.title, message: value.message });
        return;
    }
  }

  /** Forgets every run (the server stopped: no `end` will come). */
  reset(): void {
    if (this.runs.size > 0) {
      this.runs.clear();
      this.emit();
    }
  }

  private emit(ended?: { title: string; message?: string }): void {
    const active = this.active;
    for (const listener of [...this.listeners]) {
      listener(active, ended);
    }
  }
}
