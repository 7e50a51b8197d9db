/**
 * What the status-bar item and the "Show Status" document say, from the client's phase, the
 * active indexing run and the answer of the server's `pathfusion.status` command
 * (server/lsp.py `status_command`).  Pure (no `vscode` import), so every state is unit-tested.
 */
import { COMMANDS } from '../common/constants';
import type { ActiveProgress } from '../common/progress';
import type { Phase } from '../common/server';

export interface FolderStatus {
  readonly root: string;
  /** `opening`, `indexing`, `ready`, `cancelled`, `error` or `off` (no embedder). */
  readonly state: string;
  readonly error: string | null;
  readonly files: number;
  readonly functions: number;
  readonly dir?: string;
  readonly model_id?: string;
  readonly rebuild_reason?: string | null;
  readonly last_run?: LastRun | null;
}

/** What the server's last indexing run of a folder did (`IndexStats.to_json`). */
export interface LastRun {
  readonly seconds?: number;
  readonly scanned?: number;
  readonly changed?: number;
  readonly removed?: number;
  readonly embedded?: number;
  readonly cached?: number;
  readonly cancelled?: boolean;
  readonly skipped?: readonly unknown[] | number;
}

export interface ServerStatus {
  readonly name: string;
  readonly version: string;
  readonly model_loaded: boolean;
  readonly model: { readonly name?: string; readonly providers?: readonly string[] } | null;
  readonly models_dir: string;
  readonly model_error: string | null;
  readonly index: {
    readonly embedder: string | null;
    readonly embedder_error: string | null;
    readonly folders: readonly FolderStatus[];
  };
}

export interface StatusBarView {
  readonly text: string;
  readonly tooltip: string;
  readonly command: string;
  readonly severity: 'normal' | 'warning' | 'error';
}

const BUSY_STATES = new Set(['opening', 'indexing']);

/** The index part of `pathfusion.status`, also the answer of `pathfusion.reindex`. */
export type IndexStatus = ServerStatus['index'];

/** The answer of `pathfusion.reindex` when it has the documented shape. */
export function parseIndex(answer: unknown): IndexStatus | undefined {
  const index = answer as Partial<IndexStatus> | null;
  return typeof index === 'object' && index !== null && Array.isArray(index.folders) ? index as IndexStatus : undefined;
}

/** The answer of `pathfusion.status` when it has the documented shape. */
export function parseStatus(answer: unknown): ServerStatus | undefined {
  const status = answer as Partial<ServerStatus> | null;
  return typeof status === 'object' && status !== null && parseIndex(status.index) !== undefined
    ? status as ServerStatus : undefined;
}

/** Some folder is being opened or indexed (worth asking the server again soon). */
export function isIndexBusy(status: ServerStatus | undefined): boolean {
  return status !== undefined && status.index.folders.some((folder) => BUSY_STATES.has(folder.state));
}

/** The problems worth a warning icon, one sentence each. */
export function problems(status: ServerStatus): string[] {
  const found: string[] = [];
  if (status.model_error) {
    found.push(`Name suggestions are off: ${status.model_error}`);
  }
  if (status.index.embedder_error) {
    found.push(`Semantic search is off: ${status.index.embedder_error}`);
  }
  for (const folder of status.index.folders) {
    if (folder.state === 'error' && folder.error) {
      found.push(`${folder.root}: ${folder.error}`);
    }
  }
  return found;
}

function totals(index: IndexStatus): { files: number; functions: number } {
  let files = 0;
  let functions = 0;
  for (const folder of index.folders) {
    files += folder.files;
    functions += folder.functions;
  }
  return { files, functions };
}

/** The message after "Reindex Workspace". */
export function reindexSummary(index: IndexStatus): string {
  const { files, functions } = totals(index);
  const cancelled = index.folders.some((folder) => folder.state === 'cancelled');
  const failed = index.folders.filter((folder) => folder.state === 'error' || folder.state === 'off');
  return `${cancelled ? 'indexing cancelled; ' : ''}${functions} functions in ${files} files indexed` +
    `${failed.length > 0 ? ` (${failed.length} folder${failed.length > 1 ? 's' : ''} not indexed: see "pathfusion: Show Status")` : ''}.`;
}

export function statusBarView(
  phase: Phase, status?: ServerStatus, progress?: ActiveProgress, failure?: string,
): StatusBarView {
  switch (phase) {
    case 'failed':
      return {
        text: '$(error) pathfusion', severity: 'error', command: COMMANDS.showLog,
        tooltip: `pathfusion: ${failure ?? 'the server failed'}\nClick to show the log.`,
      };
    case 'starting':
      return {
        text: '$(loading~spin) pathfusion', severity: 'normal', command: COMMANDS.showLog,
        tooltip: 'Starting the pathfusion server…',
      };
    case 'stopped':
      return {
        text: '$(circle-slash) pathfusion', severity: 'warning', command: COMMANDS.restartServer,
        tooltip: 'The pathfusion server is not running. Click to restart it.',
      };
    case 'running':
      break;
  }
  if (progress !== undefined) {
    const percent = progress.percentage !== undefined ? ` ${Math.round(progress.percentage)}%` : '';
    const detail = progress.message ? `: ${progress.message}` : '';
    return {
      text: `$(sync~spin) pathfusion${percent}`, severity: 'normal',
      command: progress.cancellable ? COMMANDS.cancelIndexing : COMMANDS.showStatus,
      tooltip: `${progress.title}${detail}${progress.cancellable ? '\nClick to cancel.' : ''}`,
    };
  }
  if (status === undefined) {
    return { text: '$(check) pathfusion', severity: 'normal', command: COMMANDS.showStatus, tooltip: 'pathfusion is running.' };
  }
  const found = problems(status);
  if (found.length > 0) {
    return {
      text: '$(warning) pathfusion', severity: 'warning', command: COMMANDS.showStatus,
      tooltip: `${found.join('\n')}\nClick for the status.`,
    };
  }
  if (isIndexBusy(status)) {
    return {
      text: '$(sync~spin) pathfusion', severity: 'normal', command: COMMANDS.showStatus,
      tooltip: 'pathfusion: preparing the workspace index…',
    };
  }
  const folders = status.index.folders;
  if (folders.length === 0 || folders.every((folder) => folder.state === 'off')) {
    return {
      text: '$(check) pathfusion', severity: 'normal', command: COMMANDS.showStatus,
      tooltip: 'pathfusion: name suggestions on; no workspace folder to search.',
    };
  }
  const { files, functions } = totals(status.index);
  const cancelled = folders.some((folder) => folder.state === 'cancelled');
  return {
    text: `$(search) pathfusion: ${functions} functions`, severity: 'normal', command: COMMANDS.searchCode,
    tooltip: `${functions} functions in ${files} files indexed` +
      `${cancelled ? ' (indexing was cancelled: run "pathfusion: Reindex Workspace" to finish)' : ''}.` +
      '\nClick to search the code.',
  };
}

function cell(value: string | null | undefined): string {
  const text = value === null || value === undefined || value === '' ? '—' : value;
  return text.replace(/\|/g, '\\|').replace(/\r?\n/g, ' ');
}

function withReason(text: string, reason: string | null): string {
  return reason ? `${text} — ${reason}` : text;
}

const PROVIDERS: Readonly<Record<string, string>> = {
  CPUExecutionProvider: 'CPU', CUDAExecutionProvider: 'CUDA GPU',
};

/**
 * The naming model as a user would call it: the server reports internal ids (`code2vec`,
 * `fusion:<variant>`) that mean nothing outside the project.
 */
export function modelLabel(name: string | undefined): string {
  if (name === undefined || name === '') {
    return 'loaded';
  }
  if (name === 'code2vec') {
    return 'code2vec (syntax paths of the function)';
  }
  if (name === 'naming head') {
    return 'names written from the LLM\'s reading of the function (generative naming head)';
  }
  const variant = /^fusion:(.+)$/.exec(name)?.[1];
  if (variant === undefined) {
    return name;
  }
  return variant === 'llm' ? 'LLM embedding of the function (fusion variant "llm")'
    : `code2vec fused with the LLM embedding (fusion variant "${variant}")`;
}

function modelLine(status: ServerStatus): string {
  if (!status.model_loaded || status.model === null) {
    return withReason('not loaded', status.model_error);
  }
  const providers = [...new Set((status.model.providers ?? []).map((p) => PROVIDERS[p] ?? p))].join(', ');
  return `${modelLabel(status.model.name)}${providers ? ` on ${providers}` : ''}`;
}

/**
 * The "last run" cell: what the run did, not only how long it took — a run that found nothing
 * to do says so instead of "0.0 s".
 */
export function lastRunText(run: LastRun | null | undefined): string {
  if (run === null || run === undefined || run.seconds === undefined) {
    return '—';
  }
  const seconds = run.seconds < 0.1 ? '< 0.1 s' : `${run.seconds.toFixed(1)} s`;
  if (run.cancelled) {
    return `cancelled after ${seconds}`;
  }
  const changed = (run.changed ?? 0) + (run.removed ?? 0);
  const encoded = (run.embedded ?? 0) + (run.cached ?? 0);
  if (changed === 0 && encoded === 0) {
    return `up to date (${run.scanned ?? 0} files checked, ${seconds})`;
  }
  const parts = [`${changed} file${changed === 1 ? '' : 's'} changed`];
  if (encoded > 0) {
    parts.push(`${encoded} function${encoded === 1 ? '' : 's'} embedded`);
  }
  return `${parts.join(', ')} in ${seconds}`;
}

/** The "Show Status" document (markdown). `interpreter` is the command that runs the server. */
export function statusMarkdown(status: ServerStatus, interpreter: string): string {
  const lines = [
    `# ${status.name} ${status.version}`,
    '',
    `- Interpreter: \`${interpreter}\``,
    `- Models folder: \`${status.models_dir}\``,
    `- Name model: ${modelLine(status)}`,
    `- Embedder: ${status.index.embedder ?? withReason('none', status.index.embedder_error)}`,
    '',
    '## Workspace index',
    '',
  ];
  if (status.index.folders.length === 0) {
    lines.push('No workspace folder is indexed.');
  } else {
    lines.push('| folder | state | files | functions | last run | note |', '| --- | --- | ---: | ---: | ---: | --- |');
    for (const folder of status.index.folders) {
      const note = folder.error ?? folder.rebuild_reason ?? (folder.dir ? `index in ${folder.dir}` : null);
      lines.push(`| ${cell(folder.root)} | ${cell(folder.state)} | ${folder.files} | ${folder.functions} | ` +
        `${cell(lastRunText(folder.last_run))} | ${cell(note)} |`);
    }
  }
  const found = problems(status);
  if (found.length > 0) {
    lines.push('', '## Problems', '', ...found.map((problem) => `- ${problem}`));
  }
  lines.push('');
  return lines.join('\n');
}
