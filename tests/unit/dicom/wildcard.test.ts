import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { RoutingRule } from '../../../src/config/schema.ts';
import type { InstanceRecord } from '../../../src/pipeline/study-index.ts';
import { routeStudy } from '../../../src/routing/rules.ts';
import { cutToVr, wildcardMatch } from '../../../src/dicom/wildcard.ts';

// Routing wildcards are matched against values off the network: the matcher must stay linear-ish
// whatever the pattern, and mean exactly what '*'/'?' globbing means.

/** Reference: dynamic programming over (pattern prefix, value prefix), obviously right, O(n·m) memory. */
function referenceMatch(pattern: string, value: string): boolean {
  const p = Array.from(pattern.toUpperCase());
  const v = Array.from(value.toUpperCase());
  // row[j]: p[0..i) matches v[0..j)
  let row = new Array<boolean>(v.length + 1).fill(false);
  row[0] = true;
  for (let i = 1; i <= p.length; i++) {
    const next = new Array<boolean>(v.length + 1).fill(false);
    const c = p[i - 1];
    next[0] = c === '*' && row[0]!;
    for (let j = 1; j <= v.length; j++) {
      if (c === '*') next[j] = row[j]! || next[j - 1]!;
      else next[j] = row[j - 1]! && (c === '?' || c === v[j - 1]);
    }
    row = next;
  }
  return row[v.length]!;
}

/** The matcher routing used before (a RegExp per pattern): fine on short inputs, a second reference. */
function regexpMatch(pattern: string, value: string): boolean {
  const escaped = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${escaped}$`, 'is').test(value);
}

/** Seeded generator, so a failure names the case that fails again. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('a pattern of many stars against a long value answers in linear-ish time', () => {
  const value = 'A'.repeat(400);
  const started = performance.now();
  const result = wildcardMatch('*A*A*A*A*A*A*B', value);
  const ms = performance.now() - started;
  assert.equal(result, false);
  assert.ok(ms < 200, `took ${ms.toFixed(1)} ms`);
  // Worse still: a 64-character value (LO maximum) against a pattern of 32 stars.
  const worst = performance.now();
  assert.equal(wildcardMatch('*A'.repeat(32) + '*B', 'A'.repeat(4000)), false);
  assert.ok(performance.now() - worst < 200);
  assert.equal(wildcardMatch('*A*A*A*A*A*A*B', 'A'.repeat(399) + 'B'), true);
});

test('the matcher agrees with a reference over random patterns and values', () => {
  const random = rng(20240611);
  const alphabet = ['A', 'B', 'a', 'b', 'C', '*', '?'];
  const letters = ['A', 'B', 'a', 'b', 'C', '*', '?', ' '];
  const pick = (from: string[], n: number) =>
    Array.from({ length: n }, () => from[Math.floor(random() * from.length)]).join('');
  let matched = 0;
  for (let i = 0; i < 20_000; i++) {
    const pattern = pick(alphabet, Math.floor(random() * 9));
    const value = pick(letters, Math.floor(random() * 12));
    const expected = referenceMatch(pattern, value);
    assert.equal(
      wildcardMatch(pattern, value),
      expected,
      `pattern ${JSON.stringify(pattern)} value ${JSON.stringify(value)}`,
    );
    assert.equal(regexpMatch(pattern, value), expected, `references disagree on ${pattern} / ${value}`);
    if (expected) matched++;
  }
  // Both outcomes were exercised, not just one.
  assert.ok(matched > 1000 && matched < 19_000, `${matched} matches`);
});

test('globbing is case-insensitive, whole-value, and takes a literal star in the value', () => {
  assert.ok(wildcardMatch('chest*', 'CHEST_PA'));
  assert.ok(wildcardMatch('ER_*', 'er_cr1'));
  assert.ok(!wildcardMatch('ER_*', 'XER_CR1'));
  assert.ok(wildcardMatch('C?', 'CR'));
  assert.ok(!wildcardMatch('C?', 'C'));
  assert.ok(wildcardMatch('*', ''));
  assert.ok(!wildcardMatch('', 'A'));
  assert.ok(wildcardMatch('A*', 'A*'));
  assert.ok(wildcardMatch('T?RAX', 'TÓRAX'), "'?' is one character, accented or not");
});

test('values are cut to their VR maximum length, in characters', () => {
  assert.equal(cutToVr('X'.repeat(100), 'CS'), 'X'.repeat(16));
  assert.equal(cutToVr('X'.repeat(100), 'LO'), 'X'.repeat(64));
  assert.equal(cutToVr('short', 'AE'), 'short');
  assert.equal(cutToVr('É'.repeat(20), 'SH'), 'É'.repeat(16));
});

test('routing a hostile description against a many-star rule is quick, and the cut decides', () => {
  const rule: RoutingRule = {
    name: 'stars',
    match: { SeriesDescription: '*A*A*A*A*A*A*B' },
    models: ['*'],
    destinations: [],
    priority: 10,
  };
  const inst = (description: string): InstanceRecord => ({
    studyUid: '1.2.3',
    seriesUid: '1.2.3.1',
    sopInstanceUid: '1.2.3.1.1',
    sopClassUid: '1.2.840.10008.5.1.4.1.1.1',
    transferSyntaxUid: '1.2.840.10008.1.2.1',
    modality: 'CR',
    seriesDescription: description,
    size: 0,
    callingAe: 'X',
    callingAddress: '',
    receivedAt: 0,
  });
  const model = { id: 'm', version: '1', accepts: {} };
  const started = performance.now();
  assert.equal(routeStudy([inst('A'.repeat(1024))], [model], [rule], 'd').length, 0);
  assert.ok(performance.now() - started < 200);
  // The B past character 64 of an LO is not part of the value routing sees.
  assert.equal(routeStudy([inst('A'.repeat(70) + 'B')], [model], [rule], 'd').length, 0);
  assert.equal(routeStudy([inst('A'.repeat(63) + 'B')], [model], [rule], 'd').length, 1);
});
