/**
 * Starts, restarts and stops the language server (`<python> -m pathfusion --stdio`).
 *
 * Why restarts are queued: a settings change, a new Python environment and the restart
 * command can arrive together; each restart waits for the previous one, so two servers never
 * run side by side.  Why the working directory is the extension's folder: `python -m` puts the
 * working directory first on `sys.path`, and a workspace with its own `server` package would
 * otherwise shadow pathfusion's.
 */
import * as os from 'node:os';
import * as vscode from 'vscode';
import {
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  HoverRequest,
  LanguageClient,
  RevealOutputChannelOn,
  State,
  WorkDoneProgressCancelNotification,
  type LanguageClientOptions,
  type ServerOptions,
} from 'vscode-languageclient/node';
import { SECTION } from './constants';
import {
  diagnose, displayCommand, PREFLIGHT_SCRIPT, resolveInterpreter, runPython,
  serverCommand, type Interpreter,
} from './interpreter';
import { errorMessage, serverChannel } from './log';
import type { ProgressToken, ProgressTracker } from './progress';
import { activeInterpreter } from './python';
import { forServer, interpreterSetting, type Variables } from './settings';
import { TextTail } from './tail';

const CLIENT_ID = 'pathfusion';
const CLIENT_NAME = 'pathfusion';

/** Where the language client is. */
export type Phase = 'starting' | 'running' | 'stopped' | 'failed';

export interface PhaseChange {
  readonly phase: Phase;
  /** Why the server is not running (phase `failed`). */
  readonly failure?: string;
}

/** The error of a request made while no server runs. */
class ServerNotRunning extends Error {
  constructor() {
    super('the pathfusion server is not running');
  }
}

/** The values of `${workspaceFolder}` and `${userHome}` in the settings. */
export function settingVariables(): Variables {
  return { workspaceFolder: vscode.workspace.workspaceFolders?.[0]?.uri.fsPath, userHome: os.homedir() };
}

export class ServerManager implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private clientSubscription: { dispose(): void } | undefined;
  private current: PhaseChange = { phase: 'stopped' };
  private interpreter: Interpreter | undefined;
  private queue: Promise<void> = Promise.resolve();
  private readonly phaseEmitter = new vscode.EventEmitter<PhaseChange>();
  /** The end of the server's stderr, for the message of a failed start. */
  private readonly stderr = new TextTail();
  private readonly channel: vscode.OutputChannel;

  /** Fires on every change of {@link state}. */
  readonly onDidChangePhase = this.phaseEmitter.event;

  constructor(
    private readonly extensionPath: string,
    private readonly log: vscode.LogOutputChannel,
    private readonly progress: ProgressTracker,
  ) {
    this.channel = serverChannel(log, (text) => { this.stderr.push(text); });
  }

  get state(): PhaseChange {
    return this.current;
  }

  /** The interpreter of the last start, as the user would type it. */
  get interpreterCommand(): string | undefined {
    return this.interpreter !== undefined ? displayCommand(this.interpreter.command) : undefined;
  }

  /** (Re)starts the server after any restart already queued; never rejects. */
  restart(reason: string): Promise<void> {
    this.queue = this.queue.then(() => this.replace(reason));
    return this.queue;
  }

  /**
   * Workspace folders were added or removed.  The server follows them by itself
   * (`workspace/didChangeWorkspaceFolders`: it opens and closes the folders' indexes), so a
   * restart is needed only when the interpreter to run changes — it may follow the first
   * folder (`${workspaceFolder}` in `pathfusion.interpreter`, the Python extension's
   * environment of that folder) — or when no server runs (a folder may fix a failed start).
   * Otherwise the server is asked to pull its settings again, whose `${workspaceFolder}`
   * now names the new first folder.  Never rejects.
   */
  foldersChanged(): Promise<void> {
    this.queue = this.queue.then(async () => {
      try {
        if (this.client?.state !== State.Running || this.interpreter === undefined) {
          await this.replace('workspace folders changed and no server was running');
          return;
        }
        const next = await this.currentInterpreter();
        if (displayCommand(next.command) !== displayCommand(this.interpreter.command)) {
          await this.replace('workspace folders changed the interpreter');
          return;
        }
        this.log.info('workspace folders changed; the server follows them without a restart');
        await this.client.sendNotification(DidChangeConfigurationNotification.type, { settings: null });
      } catch (error) {
        this.log.warn(`following the workspace folders: ${errorMessage(error)}`);
      }
    });
    return this.queue;
  }

  /** Stops the server after any restart already queued; never rejects. */
  stop(): Promise<void> {
    this.queue = this.queue.then(async () => {
      await this.stopClient();
      this.setPhase({ phase: 'stopped' });
    });
    return this.queue;
  }

  /** `workspace/executeCommand` of a server command; rejects with {@link ServerNotRunning}. */
  async executeCommand(command: string, args: unknown[], token?: vscode.CancellationToken): Promise<unknown> {
    const client = this.client;
    if (client?.state !== State.Running) {
      throw new ServerNotRunning();
    }
    return client.sendRequest(ExecuteCommandRequest.type, { command, arguments: args }, token);
  }

  /**
   * Resolves true once the server runs; false when the start fails or the server stops, after
   * `timeoutMs`, or when `token` is cancelled.
   */
  whenRunning(timeoutMs: number, token?: vscode.CancellationToken): Promise<boolean> {
    if (this.client?.state === State.Running && this.current.phase === 'running') {
      return Promise.resolve(true);
    }
    return new Promise<boolean>((resolve) => {
      const finish = (running: boolean): void => {
        clearTimeout(timer);
        phases.dispose();
        cancelled?.dispose();
        resolve(running);
      };
      const timer = setTimeout(() => { finish(false); }, timeoutMs);
      const phases = this.onDidChangePhase(({ phase }) => {
        if (phase !== 'starting') {
          finish(phase === 'running');
        }
      });
      const cancelled = token?.onCancellationRequested(() => { finish(false); });
    });
  }

  /**
   * `textDocument/hover` asked of the running server directly, for a hover that arrived
   * before the language client could register its own provider; undefined when no server runs.
   */
  async hover(document: vscode.TextDocument, position: vscode.Position,
    token?: vscode.CancellationToken): Promise<vscode.Hover | undefined> {
    const client = this.client;
    if (client?.state !== State.Running) {
      return undefined;
    }
    const params = client.code2ProtocolConverter.asTextDocumentPositionParams(document, position);
    const answer = await client.sendRequest(HoverRequest.type, params, token);
    return answer === null ? undefined : client.protocol2CodeConverter.asHover(answer);
  }

  /** Asks the server to cancel the work-done progress `token` (an indexing run). */
  cancelProgress(token: ProgressToken): void {
    if (this.client?.state === State.Running) {
      void this.client.sendNotification(WorkDoneProgressCancelNotification.type, { token });
    }
  }

  dispose(): void {
    void this.stop();
    this.phaseEmitter.dispose();
  }

  private setPhase(change: PhaseChange): void {
    this.current = change;
    this.phaseEmitter.fire(change);
  }

  private async replace(reason: string): Promise<void> {
    try {
      await this.stopClient();
      this.log.info(`starting the server (${reason})`);
      this.setPhase({ phase: 'starting' });
      await this.start();
    } catch (error) {
      this.fail(`unexpected error: ${errorMessage(error)}`);
    }
  }

  /** The interpreter the settings and the Python extension name now (for the first folder). */
  private currentInterpreter(): Promise<Interpreter> {
    const folder = vscode.workspace.workspaceFolders?.[0];
    const configured = vscode.workspace.getConfiguration(SECTION, folder?.uri).get<unknown>('interpreter');
    return resolveInterpreter(
      interpreterSetting(configured, settingVariables()), () => activeInterpreter(folder?.uri, this.log));
  }

  private async start(): Promise<void> {
    const interpreter = await this.currentInterpreter();
    this.interpreter = interpreter;
    this.log.info(`interpreter (${interpreter.source}): ${displayCommand(interpreter.command)}`);
    const diagnosis = diagnose(await runPython(interpreter.command, PREFLIGHT_SCRIPT, this.extensionPath), interpreter);
    if (!diagnosis.ok) {
      this.fail(diagnosis.message);
      return;
    }
    this.log.info(`Python ${diagnosis.version}; server package: ${diagnosis.serverPath}`);
    const client = this.createClient(interpreter);
    this.client = client;
    this.stderr.clear();
    try {
      await client.start();
    } catch (error) {
      // The language client has logged its side; the server's last words say what broke.
      await this.stopClient();
      this.fail(`the server did not start: ${this.stderr.lastLine() || errorMessage(error)}`);
      return;
    }
    this.clientSubscription = client.onDidChangeState(({ newState }) => {
      if (newState === State.Stopped) {
        this.progress.reset();
      }
      this.setPhase({ phase: newState === State.Running ? 'running' : newState === State.Starting ? 'starting' : 'stopped' });
    });
    this.setPhase({ phase: 'running' });
  }

  private createClient(interpreter: Interpreter): LanguageClient {
    const { command, args } = serverCommand(interpreter);
    this.log.info(`server command: ${displayCommand([command, ...args])} (cwd ${this.extensionPath})`);
    const serverOptions: ServerOptions = { command, args, options: { cwd: this.extensionPath } };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: 'file', language: 'python' }, { scheme: 'untitled', language: 'python' }],
      outputChannel: this.channel,
      revealOutputChannelOn: RevealOutputChannelOn.Never,
      initializationOptions: forServer(vscode.workspace.getConfiguration().get(SECTION), settingVariables()),
      // Any pathfusion.* change sends didChangeConfiguration; the server then pulls the section.
      synchronize: { configurationSection: SECTION },
      middleware: {
        workspace: {
          configuration: async (params, token, next) => {
            const answer = await next(params, token);
            if (!Array.isArray(answer)) {
              return answer;
            }
            return answer.map((value: unknown, index) =>
              params.items[index]?.section === SECTION ? forServer(value, settingVariables()) : value);
          },
        },
        handleWorkDoneProgress: (token, params, next) => {
          this.progress.handle(token, params);
          if (params.kind === 'end') {
            next(token, params); // lets the client release its (never shown) progress part
          }
        },
      },
    };
    return new LanguageClient(CLIENT_ID, CLIENT_NAME, serverOptions, clientOptions);
  }

  private async stopClient(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.clientSubscription?.dispose();
    this.clientSubscription = undefined;
    this.progress.reset();
    if (client === undefined || !client.needsStop()) {
      return; // a client whose start failed has nothing to stop
    }
    try {
      await client.dispose(2000);
    } catch (error) {
      this.log.warn(`stopping the server: ${errorMessage(error)}`);
    }
  }

  private fail(message: string): void {
    this.log.error(message);
    this.setPhase({ phase: 'failed', failure: message });
    void vscode.window.showErrorMessage(`pathfusion: ${message}`, 'Show Log', 'Open Settings').then((choice) => {
      if (choice === 'Show Log') {
        this.log.show();
      } else if (choice === 'Open Settings') {
        void vscode.commands.executeCommand('workbench.action.openSettings', `${SECTION}.interpreter`);
      }
    });
  }
}
