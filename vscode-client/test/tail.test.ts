import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TextTail } from '../src/common/tail';

describe('TextTail', () => {
  it('gives the last non-blank line of what was pushed, across chunks', () => {
    const tail = new TextTail();
    tail.push('usage: pathfusion [-h]\npathfusion: error: the follow');
    tail.push('ing arguments are required: command\n\n');
    assert.equal(tail.lastLine(), 'pathfusion: error: the following arguments are required: command');
  });

  it('keeps only the last characters', () => {
    const tail = new TextTail(10);
    tail.push('0123456789abc');
    assert.equal(tail.lastLine(), '3456789abc');
  });

  it('is empty at first and after clear', () => {
    const tail = new TextTail();
    assert.equal(tail.lastLine(), '');
    tail.push('Traceback\nImportError: x\n');
    tail.clear();
    assert.equal(tail.lastLine(), '');
  });
});
