/**
 * The `pathfusion.*` settings as the server must see them.
 *
 * Why a filter: the server (server/settings.py) warns about every key it does not know, and
 * the section VS Code hands out also holds the extension's own keys (`interpreter`,
 * `searchResults`, `trace`).  Both roads into the server — `initializationOptions` and the answers to
 * `workspace/configuration` — go through {@link forServer}, so they always agree.
 *
 * Pure: no `vscode` import, so that the unit tests run under plain Node.
 */

/** Keys of the section that only the extension reads. */
export const CLIENT_ONLY_KEYS: readonly string[] = ['interpreter', 'searchResults', 'trace'];

/** Server settings holding a path, in which `${workspaceFolder}`, `${userHome}` and `~` expand. */
const PATH_KEYS: readonly string[] = ['modelsDir', 'llmModelPath'];

export const DEFAULT_SEARCH_RESULTS = 20;
const MAX_SEARCH_RESULTS = 200;

/** What the variables of a setting expand to. */
export interface Variables {
  /** The first workspace folder; `${workspaceFolder}` stays as written without one. */
  readonly workspaceFolder?: string;
  readonly userHome: string;
}

/**
 * `value` with `${workspaceFolder}`, `${userHome}` and a leading `~` expanded (the variables
 * VS Code users expect in a path setting; VS Code does not expand them for extensions).
 */
export function expandVariables(value: string, vars: Variables): string {
  let out = value.replace(/\$\{(workspaceFolder|userHome)\}/g, (match, name: string) => {
    const replacement = name === 'userHome' ? vars.userHome : vars.workspaceFolder;
    return replacement ?? match;
  });
  if (out === '~' || out.startsWith('~/') || out.startsWith('~\\')) {
    out = vars.userHome + out.slice(1);
  }
  return out;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The section without the extension's own keys and with path variables expanded.  Anything
 * that is not an object is passed through: judging it is the server's job (it explains bad
 * values to the user).  Unknown keys are passed through too, so that a typo gets the server's
 * warning.
 */
export function forServer(section: unknown, vars: Variables): unknown {
  if (!isPlainObject(section)) {
    return section;
  }
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(section)) {
    if (CLIENT_ONLY_KEYS.includes(key)) {
      continue;
    }
    out[key] = PATH_KEYS.includes(key) && typeof value === 'string' ? expandVariables(value, vars) : value;
  }
  return out;
}

/**
 * `pathfusion.interpreter` as a command line: a string is one path, an array is the
 * executable and its arguments.  Empty (or of a wrong type) means "not configured".
 */
export function interpreterSetting(value: unknown, vars: Variables): string[] {
  const parts = typeof value === 'string' ? [value] : Array.isArray(value) ? value : [];
  const words = parts.filter((part): part is string => typeof part === 'string' && part.trim() !== '');
  // A path typed with surrounding blanks is still that path; arguments are kept verbatim.
  return words.map((part, index) => expandVariables(index === 0 ? part.trim() : part, vars));
}

/** `pathfusion.searchResults`, clamped to what the server accepts. */
export function searchResultCount(value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    return DEFAULT_SEARCH_RESULTS;
  }
  return Math.min(MAX_SEARCH_RESULTS, Math.max(1, Math.round(value)));
}
