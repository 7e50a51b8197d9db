/**
 * The last few kilobytes of a stream of text (the server's stderr), so that a failed start can
 * be explained by what the server itself printed last — a traceback, a usage error — instead
 * of the language client's "connection got disposed".  Pure, for the unit tests.
 */
export class TextTail {
  private text = '';

  constructor(private readonly limit = 8192) {}

  push(chunk: string): void {
    this.text = (this.text + chunk).slice(-this.limit);
  }

  clear(): void {
    this.text = '';
  }

  /** The last non-blank line (for a traceback: the exception), or '' when there is none. */
  lastLine(): string {
    const lines = this.text.split(/\r?\n/).map((line) => line.trim()).filter((line) => line !== '');
    return lines.at(-1) ?? '';
  }
}
