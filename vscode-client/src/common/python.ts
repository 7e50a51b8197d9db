/**
 * The Python extension's active environment, when `ms-python.python` is installed.
 *
 * Why no `@vscode/python-extension` dependency: the two calls needed here
 * (`environments.getActiveEnvironmentPath` and `resolveEnvironment`) are read from the
 * extension's exports directly, typed by the small interfaces below, and checked at run time
 * so that an older or newer Python extension degrades to "no interpreter" instead of throwing.
 */
import * as vscode from 'vscode';
import { errorMessage } from './log';

const PYTHON_EXTENSION_ID = 'ms-python.python';

interface EnvironmentPath {
  readonly id: string;
  readonly path: string;
}

interface ResolvedEnvironment {
  readonly executable: { readonly uri: vscode.Uri | undefined };
}

interface PythonEnvironments {
  getActiveEnvironmentPath(resource?: vscode.Uri): EnvironmentPath;
  resolveEnvironment(environment: EnvironmentPath): Promise<ResolvedEnvironment | undefined>;
  readonly onDidChangeActiveEnvironmentPath: vscode.Event<unknown>;
}

function isEnvironments(value: unknown): value is PythonEnvironments {
  const api = value as Partial<PythonEnvironments> | null | undefined;
  return typeof api?.getActiveEnvironmentPath === 'function' && typeof api.resolveEnvironment === 'function'
    && typeof api.onDidChangeActiveEnvironmentPath === 'function';
}

/** The environments API of the Python extension (activating it if needed), or undefined. */
async function environments(log: vscode.LogOutputChannel): Promise<PythonEnvironments | undefined> {
  const extension = vscode.extensions.getExtension<unknown>(PYTHON_EXTENSION_ID);
  if (extension === undefined) {
    return undefined;
  }
  try {
    const exports = extension.isActive ? extension.exports : await extension.activate();
    const api = (exports as { environments?: unknown } | undefined)?.environments;
    if (isEnvironments(api)) {
      return api;
    }
    log.warn(`${PYTHON_EXTENSION_ID} has no usable environments API; ignoring it`);
  } catch (error) {
    log.warn(`cannot use ${PYTHON_EXTENSION_ID}: ${errorMessage(error)}`);
  }
  return undefined;
}

/** The active environment's interpreter for `resource`, or undefined (no extension, no environment). */
export async function activeInterpreter(
  resource: vscode.Uri | undefined, log: vscode.LogOutputChannel,
): Promise<string[] | undefined> {
  const api = await environments(log);
  if (api === undefined) {
    return undefined;
  }
  try {
    const resolved = await api.resolveEnvironment(api.getActiveEnvironmentPath(resource));
    const path = resolved?.executable.uri?.fsPath;
    return path !== undefined ? [path] : undefined;
  } catch (error) {
    log.warn(`cannot resolve the active Python environment: ${errorMessage(error)}`);
    return undefined;
  }
}

/** Calls `listener` when the user picks another environment in the Python extension. */
export async function onDidChangeActiveInterpreter(
  listener: () => void, log: vscode.LogOutputChannel,
): Promise<vscode.Disposable | undefined> {
  const api = await environments(log);
  return api?.onDidChangeActiveEnvironmentPath(listener);
}
