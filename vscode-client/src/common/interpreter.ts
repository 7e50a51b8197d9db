/**
 * Which Python runs the server, and whether it can.
 *
 * Why a preflight check: when the interpreter is wrong or lacks the `pathfusion` package, the
 * language client only reports "couldn't create connection to server".  A short Python
 * script run first (no heavy imports: about 0.1 s) tells which of the usual mistakes it is,
 * so that the notification can say what to fix.  Failures it cannot foresee (a dependency
 * that crashes on import) are explained after the fact by the server's own stderr.
 *
 * Pure apart from {@link runPython} (node's child_process): no `vscode` import.
 */
import { execFile } from 'node:child_process';
import { TextTail } from './tail';

export type InterpreterSource = 'setting' | 'python-extension' | 'default';

/** An executable and its leading arguments. */
export type CommandLine = readonly [string, ...string[]];

export interface Interpreter {
  readonly command: CommandLine;
  readonly source: InterpreterSource;
}

/** Used when neither the setting nor the Python extension names an interpreter. */
export const DEFAULT_PYTHON = process.platform === 'win32' ? 'python' : 'python3';

/** The oldest Python the server supports (pyproject.toml `requires-python`). */
export const MIN_PYTHON: readonly [number, number] = [3, 10];

/**
 * The interpreter, by priority: `pathfusion.interpreter`, then the Python extension's active
 * environment, then {@link DEFAULT_PYTHON}.  The Python extension is asked only when the
 * setting is empty (asking may activate it, which takes a while).
 */
export async function resolveInterpreter(
  configured: readonly string[],
  fromPythonExtension: () => Promise<readonly string[] | undefined>,
): Promise<Interpreter> {
  const [executable, ...args] = configured;
  if (executable !== undefined) {
    return { command: [executable, ...args], source: 'setting' };
  }
  const [active, ...activeArgs] = (await fromPythonExtension()) ?? [];
  if (active !== undefined) {
    return { command: [active, ...activeArgs], source: 'python-extension' };
  }
  return { command: [DEFAULT_PYTHON], source: 'default' };
}

/**
 * The server's command line: the `serve` command of `python -m pathfusion` (the module's command
 * line is the `pathfusion` CLI; it serves by default only when given no argument at all), with
 * `--stdio` explicit so that the command in the log is the whole truth.
 */
export function serverCommand(interpreter: Interpreter): { command: string; args: string[] } {
  const [command, ...rest] = interpreter.command;
  return { command, args: [...rest, '-m', 'pathfusion', 'serve', '--stdio'] };
}

/**
 * Prints one JSON object: the Python version, where `pathfusion.server.lsp` would be imported from, and
 * which requirements of the installed `pathfusion` distribution are missing (requirements
 * with an environment marker or an extra are not checked).  Written for any Python, so that
 * an old one still answers.
 */
export const PREFLIGHT_SCRIPT = `
import json, re, sys
out = {"version": list(sys.version_info[:3]), "executable": sys.executable,
       "server": None, "error": None, "distribution": None, "missing": []}
try:
    import importlib.util
    spec = importlib.util.find_spec("pathfusion.server.lsp")
    out["server"] = spec.origin if spec is not None else None
except Exception as exc:
    out["error"] = "%s: %s" % (type(exc).__name__, exc)
try:
    from importlib import metadata
    out["distribution"] = metadata.version("pathfusion")
    for req in metadata.requires("pathfusion") or []:
        if ";" in req:
            continue
        name = re.split(r"[<>=!~ \\[(]", req, 1)[0]
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            out["missing"].append(name)
except Exception:
    pass
print(json.dumps(out))
`;

/** The outcome of running a Python command. */
export interface RunResult {
  /** Set when the process could not be started (`code` is e.g. `ENOENT`, `EACCES`). */
  readonly spawnError?: { readonly code?: string; readonly message: string };
  readonly exitCode: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export type Problem = 'not-runnable' | 'not-python' | 'old-python' | 'no-package' | 'missing-dependencies';

export type Diagnosis =
  | { readonly ok: true; readonly version: string; readonly serverPath: string }
  | { readonly ok: false; readonly problem: Problem; readonly message: string };

/** The last non-blank line of a traceback (the exception), or '' when there is none. */
export function lastErrorLine(stderr: string): string {
  const tail = new TextTail();
  tail.push(stderr);
  return tail.lastLine();
}

/** The interpreter as a user would type it, quoted where needed. */
export function displayCommand(command: readonly string[]): string {
  return command.map((word) => (/[\s"']/.test(word) ? JSON.stringify(word) : word)).join(' ');
}

interface PreflightOutput {
  version: number[];
  server: string | null;
  error: string | null;
  missing: string[];
}

function parsePreflight(stdout: string): PreflightOutput | undefined {
  const line = stdout.trim().split(/\r?\n/).at(-1) ?? '';
  try {
    const data = JSON.parse(line) as Partial<PreflightOutput> | null;
    if (data === null || !Array.isArray(data.version) || !Array.isArray(data.missing)) {
      return undefined;
    }
    return {
      version: data.version,
      server: typeof data.server === 'string' ? data.server : null,
      error: typeof data.error === 'string' ? data.error : null,
      missing: data.missing,
    };
  } catch {
    return undefined;
  }
}

/**
 * What the preflight run says about `interpreter`, with a message that says what to do
 * (plain text with quotes: notifications do not render markdown).
 */
export function diagnose(result: RunResult, interpreter: Interpreter): Diagnosis {
  const shown = `"${displayCommand(interpreter.command)}"`;
  const pip = `"${displayCommand(interpreter.command)} -m pip install -e <pathfusion checkout>"`;
  const fix = interpreter.source === 'setting'
    ? 'Check the pathfusion.interpreter setting.'
    : 'Set pathfusion.interpreter to the Python that has pathfusion installed.';
  if (result.spawnError !== undefined) {
    const why = result.spawnError.code === 'ENOENT' ? 'was not found'
      : result.spawnError.code === 'EACCES' ? 'is not executable'
        : `cannot be started (${result.spawnError.message})`;
    return { ok: false, problem: 'not-runnable', message: `The Python interpreter ${shown} ${why}. ${fix}` };
  }
  const output = result.exitCode === 0 ? parsePreflight(result.stdout) : undefined;
  if (output === undefined) {
    const detail = lastErrorLine(result.stderr);
    return {
      ok: false, problem: 'not-python',
      message: `${shown} did not run as a Python interpreter${detail ? `: ${detail}` : ''}. ${fix}`,
    };
  }
  const [major = 0, minor = 0, micro = 0] = output.version;
  const version = `${major}.${minor}.${micro}`;
  if (major < MIN_PYTHON[0] || (major === MIN_PYTHON[0] && minor < MIN_PYTHON[1])) {
    return {
      ok: false, problem: 'old-python',
      message: `${shown} is Python ${version}; the pathfusion server needs Python ≥ ${MIN_PYTHON.join('.')}. ${fix}`,
    };
  }
  if (output.server === null) {
    return {
      ok: false, problem: 'no-package',
      message: `The pathfusion server is not installed for ${shown} (Python ${version}). ` +
        `Install it with ${pip}, or point pathfusion.interpreter at a Python that has it.`,
    };
  }
  if (output.missing.length > 0) {
    return {
      ok: false, problem: 'missing-dependencies',
      message: `pathfusion is installed for ${shown} but these packages are missing: ` +
        `${output.missing.join(', ')}. Reinstall it with ${pip}.`,
    };
  }
  return { ok: true, version, serverPath: output.server };
}

/**
 * Runs `command -c code` with a time limit; never rejects.  `cwd` matters: `-c` and `-m`
 * both put the working directory first on `sys.path`.
 */
export function runPython(
  command: CommandLine, code: string, cwd: string, timeoutMs = 30_000,
): Promise<RunResult> {
  const [executable, ...rest] = command;
  return new Promise((resolve) => {
    execFile(executable, [...rest, '-c', code], { cwd, timeout: timeoutMs, windowsHide: true },
      (error, stdout, stderr) => {
        if (error === null) {
          resolve({ exitCode: 0, stdout, stderr });
          return;
        }
        // execFile reports a spawn failure with a string code, an exit status with a number.
        if (typeof error.code === 'string') {
          resolve({ spawnError: { code: error.code, message: error.message }, exitCode: null, stdout, stderr });
          return;
        }
        resolve({ exitCode: typeof error.code === 'number' ? error.code : null, stdout, stderr });
      });
  });
}
