import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  DEFAULT_PYTHON, diagnose, displayCommand, lastErrorLine, PREFLIGHT_SCRIPT, resolveInterpreter, runPython,
  serverCommand, type Diagnosis, type Interpreter, type RunResult,
} from '../src/common/interpreter';

const fromSetting: Interpreter = { command: ['/opt/py/bin/python'], source: 'setting' };

function preflight(data: Record<string, unknown>): RunResult {
  const output = { version: [3, 11, 2], executable: '/opt/py/bin/python', server: '/src/server/lsp.py',
    error: null, distribution: '0.1.0', missing: [], ...data };
  return { exitCode: 0, stdout: `${JSON.stringify(output)}\n`, stderr: '' };
}

describe('resolveInterpreter', () => {
  it('prefers pathfusion.interpreter and does not ask the Python extension', async () => {
    let asked = false;
    const found = await resolveInterpreter(['/a/python', '-X', 'utf8'], () => {
      asked = true;
      return Promise.resolve(['/b/python']);
    });
    assert.deepEqual(found, { command: ['/a/python', '-X', 'utf8'], source: 'setting' });
    assert.equal(asked, false);
  });

  it('then takes the Python extension\'s active environment', async () => {
    assert.deepEqual(await resolveInterpreter([], () => Promise.resolve(['/b/python'])),
      { command: ['/b/python'], source: 'python-extension' });
  });

  it('then falls back to python3', async () => {
    assert.deepEqual(await resolveInterpreter([], () => Promise.resolve(undefined)),
      { command: [DEFAULT_PYTHON], source: 'default' });
    assert.deepEqual(await resolveInterpreter([], () => Promise.resolve([])),
      { command: [DEFAULT_PYTHON], source: 'default' });
  });
});

describe('serverCommand', () => {
  it('runs the server module over stdio after the interpreter\'s own arguments', () => {
    assert.deepEqual(serverCommand({ command: ['/a/python', '-X', 'utf8'], source: 'setting' }),
      { command: '/a/python', args: ['-X', 'utf8', '-m', 'pathfusion', 'serve', '--stdio'] });
  });
});

/** The failure a diagnosis must be. */
function failure(diagnosis: Diagnosis): { problem: string; message: string } {
  assert.ok(!diagnosis.ok, `expected a failure, got ${JSON.stringify(diagnosis)}`);
  return diagnosis;
}

describe('diagnose', () => {
  it('accepts a Python ≥ 3.10 that has the server', () => {
    assert.deepEqual(diagnose(preflight({}), fromSetting),
      { ok: true, version: '3.11.2', serverPath: '/src/server/lsp.py' });
  });

  it('says when the interpreter does not exist or cannot be executed', () => {
    const missing = failure(diagnose({ spawnError: { code: 'ENOENT', message: 'spawn ENOENT' }, exitCode: null, stdout: '', stderr: '' }, fromSetting));
    assert.equal(missing.problem, 'not-runnable');
    assert.equal(missing.message, 'The Python interpreter "/opt/py/bin/python" was not found. Check the pathfusion.interpreter setting.');
    const denied = failure(diagnose({ spawnError: { code: 'EACCES', message: 'spawn EACCES' }, exitCode: null, stdout: '', stderr: '' }, fromSetting));
    assert.match(denied.message, /is not executable/);
  });

  it('says when the program is not a Python', () => {
    const result = failure(diagnose({ exitCode: 2, stdout: '', stderr: 'node: bad option: -c\n' }, fromSetting));
    assert.equal(result.problem, 'not-python');
    assert.match(result.message, /node: bad option: -c/);
    assert.equal(failure(diagnose({ exitCode: 0, stdout: 'hello', stderr: '' }, fromSetting)).problem, 'not-python');
  });

  it('rejects a Python older than 3.10', () => {
    const result = failure(diagnose(preflight({ version: [3, 8, 10] }), fromSetting));
    assert.equal(result.problem, 'old-python');
    assert.match(result.message, /Python 3\.8\.10/);
  });

  it('says when the server package is not installed, with the pip command', () => {
    const result = failure(diagnose(preflight({ server: null, distribution: null }), { command: ['python3'], source: 'default' }));
    assert.equal(result.problem, 'no-package');
    assert.match(result.message, /python3 -m pip install -e/);
  });

  it('names missing dependencies', () => {
    const result = failure(diagnose(preflight({ missing: ['onnxruntime', 'hnswlib'] }), fromSetting));
    assert.equal(result.problem, 'missing-dependencies');
    assert.match(result.message, /onnxruntime, hnswlib/);
  });
});

describe('helpers', () => {
  it('lastErrorLine is the exception line of a traceback', () => {
    const traceback = 'Traceback (most recent call last):\n  File "<string>", line 1\nModuleNotFoundError: No module named \'onnxruntime\'\n\n';
    assert.equal(lastErrorLine(traceback), 'ModuleNotFoundError: No module named \'onnxruntime\'');
    assert.equal(lastErrorLine(''), '');
  });

  it('displayCommand quotes words with blanks', () => {
    assert.equal(displayCommand(['/opt/my py/python', '-X', 'utf8']), '"/opt/my py/python" -X utf8');
  });
});

// The preflight script itself, run by real interpreters (skipped where there is none).
describe('PREFLIGHT_SCRIPT with real interpreters', () => {
  const cwd = tmpdir();
  const venvPython = process.env.PATHFUSION_PYTHON ?? join(__dirname, '..', '..', '.venv', 'bin', 'python');

  it('finds the server in the pathfusion virtual environment', { skip: !existsSync(venvPython) }, async () => {
    const interpreter: Interpreter = { command: [venvPython], source: 'setting' };
    const result = diagnose(await runPython(interpreter.command, PREFLIGHT_SCRIPT, cwd), interpreter);
    assert.ok(result.ok, JSON.stringify(result));
    assert.ok(result.serverPath.endsWith(join('server', 'lsp.py')));
  });

  it('reports a missing interpreter', async () => {
    const interpreter: Interpreter = { command: ['/nonexistent/python3'], source: 'setting' };
    assert.equal(failure(diagnose(await runPython(interpreter.command, PREFLIGHT_SCRIPT, cwd), interpreter)).problem,
      'not-runnable');
  });

  it('runs under the system python3 and finds no server there', { skip: !existsSync('/usr/bin/python3') }, async () => {
    const interpreter: Interpreter = { command: ['/usr/bin/python3', '-I'], source: 'default' };
    const { problem } = failure(diagnose(await runPython(interpreter.command, PREFLIGHT_SCRIPT, cwd), interpreter));
    assert.ok(problem === 'no-package' || problem === 'old-python', problem);
  });
});
