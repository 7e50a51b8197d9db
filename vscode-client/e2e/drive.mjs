// Opens code-server in headless Chromium over the DevTools protocol and follows the test
// extension (e2e/test-extension): at each stage it writes, a screenshot is saved and the DOM
// is checked (the hover widget shows name suggestions, the search QuickPick lists results, the
// notification names the missing interpreter).
// Usage: node drive.mjs URL RESULT_FILE OUT_DIR   (Node ≥ 22: global WebSocket and fetch)
// Exit status 0 when every check of the extension and of the DOM passed.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, resultFile, outDir] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM ?? 'chromium';
const TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS ?? 600_000);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A minimal DevTools protocol client over one WebSocket. */
class Cdp {
  static async connect(wsUrl) {
    const socket = new WebSocket(wsUrl);
    await new Promise((resolve, reject) => {
      socket.addEventListener('open', resolve, { once: true });
      socket.addEventListener('error', reject, { once: true });
    });
    return new Cdp(socket);
  }

  constructor(socket) {
    this.socket = socket;
    this.nextId = 1;
    this.pending = new Map();
    this.listeners = [];
    socket.addEventListener('message', (event) => {
      const message = JSON.parse(event.data);
      if (message.id !== undefined) {
        const waiter = this.pending.get(message.id);
        this.pending.delete(message.id);
        if (message.error) {
          waiter?.reject(new Error(`${message.error.message} (${message.error.code})`));
        } else {
          waiter?.resolve(message.result);
        }
      } else {
        for (const listener of this.listeners) {
          listener(message);
        }
      }
    });
  }

  send(method, params = {}) {
    const id = this.nextId++;
    this.socket.send(JSON.stringify({ id, method, params }));
    return new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
  }

  async evaluate(expression) {
    const { result, exceptionDetails } = await this.send('Runtime.evaluate', { expression, returnByValue: true });
    if (exceptionDetails) {
      throw new Error(exceptionDetails.text);
    }
    return result.value;
  }
}

/** Starts Chromium with a fresh profile; resolves with the process and its DevTools port. */
async function startChromium(profile) {
  const browser = spawn(CHROMIUM, [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage', `--user-data-dir=${profile}`, '--remote-debugging-port=0',
    '--remote-debugging-address=127.0.0.1', '--window-size=1440,900', 'about:blank',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  const port = await new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`Chromium did not start:\n${seen}`)), 60_000);
    browser.stderr.on('data', (chunk) => {
      seen += chunk.toString();
      const match = /DevTools listening on ws:\/\/127\.0\.0\.1:(\d+)\//.exec(seen);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    browser.on('exit', (code) => reject(new Error(`Chromium exited with ${code}:\n${seen}`)));
  });
  return { browser, port };
}

function readResult() {
  try {
    return JSON.parse(readFileSync(resultFile, 'utf8'));
  } catch {
    return undefined; // not written yet, or being replaced
  }
}

const HOVER_TEXT = `[...document.querySelectorAll('.monaco-hover')].map((e) => e.innerText).join('\\n')`;
const NOTIFICATIONS = `[...document.querySelectorAll('.notifications-toasts .notification-list-item')].map((e) => e.innerText.replace(/\\s+/g, ' ').trim())`;
const QUICKPICK_ROWS = `[...document.querySelectorAll('.quick-input-widget .monaco-list-row')].map((e) => e.innerText.replace(/\\s+/g, ' ').trim())`;

async function main() {
  const profile = mkdtempSync(join(tmpdir(), 'pathfusion-chromium-'));
  const { browser, port } = await startChromium(profile);
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, () => {  // never leave a headless browser behind
      browser.kill('SIGTERM');
      rmSync(profile, { recursive: true, force: true });
      process.exit(1);
    });
  }
  const dom = {};
  const consoleErrors = [];
  try {
    const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
    const page = targets.find((target) => target.type === 'page');
    const cdp = await Cdp.connect(page.webSocketDebuggerUrl);
    cdp.listeners.push((message) => {
      if (message.method === 'Runtime.consoleAPICalled' && message.params.type === 'error') {
        consoleErrors.push(message.params.args.map((arg) => arg.value ?? arg.description ?? '').join(' '));
      }
    });
    await cdp.send('Page.enable');
    await cdp.send('Runtime.enable');
    await cdp.send('Emulation.setDeviceMetricsOverride', { width: 1440, height: 900, deviceScaleFactor: 1, mobile: false });
    await cdp.send('Page.navigate', { url });
    const screenshot = async (name) => {
      const { data } = await cdp.send('Page.captureScreenshot', { format: 'png' });
      writeFileSync(join(outDir, `${name}.png`), Buffer.from(data, 'base64'));
    };

    const deadline = Date.now() + TIMEOUT_MS;
    let stage = '';
    while (Date.now() < deadline) {
      const result = readResult();
      if (result && result.stage !== stage) {
        stage = result.stage;
        console.log(`stage: ${stage} ${JSON.stringify(Object.fromEntries(Object.entries(result.checks).map(([k, v]) => [k, v.ok])))}`);
        if (stage === 'hover') {
          await sleep(1500); // the hover widget renders asynchronously
          dom.hover = await cdp.evaluate(HOVER_TEXT);
          await screenshot('hover');
        } else if (stage === 'search') {
          dom.quickPick = await cdp.evaluate(QUICKPICK_ROWS);
          await screenshot('search');
        } else if (stage === 'status') {
          await screenshot('status');
        } else if (stage === 'error') {
          await sleep(1500);
          dom.notifications = await cdp.evaluate(NOTIFICATIONS);
          await screenshot('error');
        } else if (stage === 'done') {
          await screenshot('final');
          break;
        }
      }
      await sleep(250);
    }
    if (stage !== 'done') {
      await screenshot('timeout');
      throw new Error(`the test extension did not finish in ${TIMEOUT_MS / 1000} s (stage "${stage || 'none'}")`);
    }
  } finally {
    writeFileSync(join(outDir, 'dom.json'), JSON.stringify({ ...dom, consoleErrors }, null, 1));
    browser.kill('SIGTERM');
    await sleep(500);
    rmSync(profile, { recursive: true, force: true });
  }

  const result = readResult();
  const failures = Object.entries(result.checks).filter(([, check]) => !check.ok).map(([name, check]) => `${name}: ${check.error}`);
  if (result.error) {
    failures.push(`test extension: ${result.error}`);
  }
  for (const name of ['activate', 'hover', 'rename', 'search', 'reindex', 'badInterpreter']) {
    if (!(name in result.checks)) {
      failures.push(`${name}: not run`);
    }
  }
  if (!/suggested names/.test(dom.hover ?? '')) {
    failures.push(`DOM: the hover widget does not show name suggestions: ${JSON.stringify(dom.hover)}`);
  }
  if (!(dom.quickPick ?? []).some((row) => row.includes('store.py'))) {
    failures.push(`DOM: the search QuickPick shows no result from store.py: ${JSON.stringify(dom.quickPick)}`);
  }
  if (!(dom.notifications ?? []).some((text) => text.includes('"/nonexistent/bin/python3" was not found'))) {
    failures.push(`DOM: no notification about the missing interpreter: ${JSON.stringify(dom.notifications)}`);
  }
  if (failures.length > 0) {
    console.error(`FAILED:\n- ${failures.join('\n- ')}`);
    process.exit(1);
  }
  console.log(`passed: ${Object.keys(result.checks).join(', ')}; the page showed the hover, ` +
    `the QuickPick (${dom.quickPick.length} rows) and the interpreter error`);
}

if (!url || !resultFile || !outDir || !existsSync(outDir)) {
  console.error('usage: node drive.mjs URL RESULT_FILE OUT_DIR (existing)');
  process.exit(2);
}
main().catch((error) => {
  console.error(error.stack ?? String(error));
  process.exit(1);
});
