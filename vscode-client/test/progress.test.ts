import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ProgressTracker, type ActiveProgress } from '../src/common/progress';

describe('ProgressTracker', () => {
  it('follows begin, report and end of a run', () => {
    const tracker = new ProgressTracker();
    const seen: (ActiveProgress | undefined)[] = [];
    const ended: (string | undefined)[] = [];
    tracker.onDidChange((active, end) => {
      seen.push(active);
      if (end !== undefined) {
        ended.push(end.message);
      }
    });
    tracker.handle('t1', { kind: 'begin', title: 'pathfusion: indexing', percentage: 0, cancellable: true });
    tracker.handle('t1', { kind: 'report', percentage: 40, message: '4/10 files' });
    assert.deepEqual(tracker.active, {
      token: 't1', title: 'pathfusion: indexing', message: '4/10 files', percentage: 40, cancellable: true,
    });
    tracker.handle('t1', { kind: 'report', message: '5/10 files' });
    assert.equal(tracker.active.percentage, 40, 'a report without percentage keeps the last one');
    tracker.handle('t1', { kind: 'end', message: '120 functions indexed' });
    assert.equal(tracker.active, undefined);
    assert.equal(seen.length, 4);
    assert.deepEqual(ended, ['120 functions indexed']);
  });

  it('ignores reports and ends of unknown tokens', () => {
    const tracker = new ProgressTracker();
    let changes = 0;
    tracker.onDidChange(() => { changes += 1; });
    tracker.handle(7, { kind: 'report', percentage: 10 });
    tracker.handle(7, { kind: 'end' });
    assert.equal(changes, 0);
  });

  it('shows the latest run while two overlap', () => {
    const tracker = new ProgressTracker();
    const shown = (): string | undefined => tracker.active?.title;
    tracker.handle('a', { kind: 'begin', title: 'first' });
    tracker.handle('b', { kind: 'begin', title: 'second' });
    assert.equal(shown(), 'second');
    tracker.handle('b', { kind: 'end' });
    assert.equal(shown(), 'first');
  });

  it('reset forgets every run; unsubscribing stops the calls', () => {
    const tracker = new ProgressTracker();
    let changes = 0;
    const unsubscribe = tracker.onDidChange(() => { changes += 1; });
    tracker.handle('a', { kind: 'begin', title: 'run' });
    tracker.reset();
    assert.equal(tracker.active, undefined);
    assert.equal(changes, 2);
    unsubscribe();
    tracker.handle('b', { kind: 'begin', title: 'run' });
    assert.equal(changes, 2);
  });
});
