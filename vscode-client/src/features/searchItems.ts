/**
 * `pathfusion.search` results as QuickPick rows.  Pure (no `vscode` import): the QuickPick
 * glue in search.ts turns a {@link SearchItemView} into a `vscode.QuickPickItem`.
 */

export interface LspPosition {
  readonly line: number;
  readonly character: number;
}

export interface LspRange {
  readonly start: LspPosition;
  readonly end: LspPosition;
}

/** One result of the server's `pathfusion.search` (server/index.py `SearchResult`). */
export interface SearchResult {
  readonly uri: string;
  readonly range: LspRange;
  readonly name: string;
  readonly qualname: string;
  readonly score: number;
  readonly snippet: string;
  /** The `def` line on one line, also when the signature spans several (newer servers). */
  readonly signature?: string;
  /** The docstring's first line, '' when there is none (newer servers). */
  readonly summary?: string;
}

export interface SearchItemView {
  readonly label: string;
  readonly description: string;
  readonly detail: string;
  readonly result: SearchResult;
}

/** The longest detail line shown; the QuickPick cuts longer ones anyway, without an ellipsis. */
export const DETAIL_CHARS = 160;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

function isPosition(value: unknown): value is LspPosition {
  return isRecord(value) && Number.isInteger(value.line) && Number.isInteger(value.character);
}

function isResult(value: unknown): value is SearchResult {
  return isRecord(value)
    && typeof value.uri === 'string' && typeof value.name === 'string'
    && typeof value.qualname === 'string' && typeof value.score === 'number'
    && typeof value.snippet === 'string'
    && (value.signature === undefined || typeof value.signature === 'string')
    && (value.summary === undefined || typeof value.summary === 'string')
    && isRecord(value.range) && isPosition(value.range.start) && isPosition(value.range.end);
}

/** The well-formed results of a `pathfusion.search` answer (anything else is dropped). */
export function parseResults(answer: unknown): SearchResult[] {
  return Array.isArray(answer) ? answer.filter(isResult) : [];
}

/** Method inside a class body, function otherwise — as the server's `symbol_kind`. */
export function isMethod(qualname: string): boolean {
  const dot = qualname.lastIndexOf('.');
  return dot > 0 && !qualname.slice(0, dot).endsWith('<locals>');
}

/**
 * The snippet on one line: the `def` line is already the label, so the detail starts with
 * what follows it (usually the docstring), whitespace collapsed, cut at {@link DETAIL_CHARS}.
 */
export function snippetLine(snippet: string): string {
  const lines = snippet.split(/\r?\n/);
  const def = lines.findIndex((line) => /^\s*(async\s+)?def\s/.test(line));
  const body = def >= 0 && lines.length > def + 1 ? lines.slice(def + 1) : lines;
  const text = body.join(' ').replace(/\s+/g, ' ').trim();
  return text.length > DETAIL_CHARS ? `${text.slice(0, DETAIL_CHARS - 1)}…` : text;
}

function cut(text: string): string {
  return text.length > DETAIL_CHARS ? `${text.slice(0, DETAIL_CHARS - 1)}…` : text;
}

/**
 * What the detail line shows after the score: the `def` line and the docstring's first line
 * when the server sends them (a multi-line signature joined into one), else the snippet's
 * lines after the `def` line (older servers).
 */
export function detailText(result: SearchResult): string {
  if (result.signature === undefined) {
    return snippetLine(result.snippet);
  }
  return cut(result.summary ? `${result.signature} — ${result.summary}` : result.signature);
}

/**
 * The row of a result: name (with a method/function icon), then qualified name and
 * `file:line`, then score and snippet.  `relativePath` gives the file as shown to the user
 * (VS Code's `workspace.asRelativePath`).
 */
export function toItemView(result: SearchResult, relativePath: (uri: string) => string): SearchItemView {
  const icon = isMethod(result.qualname) ? '$(symbol-method)' : '$(symbol-function)';
  const where = `${relativePath(result.uri)}:${result.range.start.line + 1}`;
  const description = result.qualname !== result.name ? `${result.qualname} · ${where}` : where;
  const snippet = detailText(result);
  const score = result.score.toFixed(2);
  return {
    label: `${icon} ${result.name}`,
    description,
    detail: snippet ? `${score} · ${snippet}` : score,
    result,
  };
}

/** An editor tab as far as closing previews is concerned. */
export interface TabView {
  /** The document's URI (as a string), undefined for tabs that show no text document. */
  readonly uri: string | undefined;
  readonly isPreview: boolean;
}

/**
 * The tabs to close when the user leaves the search with Escape after browsing previews:
 * preview tabs of documents the search itself opened.  A document that already had a tab
 * when the search began is the user's and stays, as does a preview the user pinned.
 */
export function previewTabsToClose(tabs: readonly TabView[], openBefore: ReadonlySet<string>,
  previewed: ReadonlySet<string>): number[] {
  const close: number[] = [];
  tabs.forEach((tab, index) => {
    if (tab.isPreview && tab.uri !== undefined && previewed.has(tab.uri) && !openBefore.has(tab.uri)) {
      close.push(index);
    }
  });
  return close;
}
