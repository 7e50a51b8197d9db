import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import { debounce } from '../src/common/debounce';

describe('debounce', () => {
  beforeEach(() => { mock.timers.enable({ apis: ['setTimeout'] }); });
  afterEach(() => { mock.timers.reset(); });

  it('calls once, after the wait, with the last arguments of a burst', () => {
    const calls: string[] = [];
    const typed = debounce((query: string) => { calls.push(query); }, 200);
    typed('l');
    mock.timers.tick(100);
    typed('lo');
    mock.timers.tick(100);
    typed('load');
    mock.timers.tick(199);
    assert.deepEqual(calls, []);
    mock.timers.tick(1);
    assert.deepEqual(calls, ['load']);
  });

  it('calls again for a later burst', () => {
    const calls: number[] = [];
    const run = debounce((n: number) => { calls.push(n); }, 50);
    run(1);
    mock.timers.tick(50);
    run(2);
    mock.timers.tick(50);
    assert.deepEqual(calls, [1, 2]);
  });

  it('cancel drops the pending call', () => {
    const calls: number[] = [];
    const run = debounce((n: number) => { calls.push(n); }, 50);
    run(1);
    run.cancel();
    mock.timers.tick(100);
    assert.deepEqual(calls, []);
    run.cancel(); // nothing pending: a no-op
  });
});
