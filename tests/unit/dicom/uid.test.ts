import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidUidError, isValidUid, newUid, requireUid, uidFromName } from '../../../src/dicom/uid.ts';

test('isValidUid accepts well-formed UIDs', () => {
  for (const uid of ['0', '1.2', '1.2.840.10008.1.2.1', '2.25.0', '1.0.3', `1.${'2'.repeat(62)}`]) {
    assert.equal(isValidUid(uid), true, uid);
  }
});

test('isValidUid rejects malformed and hostile values', () => {
  const bad: unknown[] = [
    '',
    '.',
    '1.',
    '.1',
    '1..2',
    '1.02', // leading zero in a component
    '01.2',
    '1.2.a',
    '1.2 ',
    ' 1.2',
    '1.2\0',
    '1.2-3',
    '../1.2',
    '1.2/../../etc',
    '..',
    '1.2\\3',
    `1.${'2'.repeat(63)}`, // 65 characters
    '١.٢', // non-ASCII digits
    undefined,
    null,
    12,
    ['1.2'],
  ];
  for (const value of bad) assert.equal(isValidUid(value), false, JSON.stringify(value));
});

test('the 64-character limit is exact', () => {
  const sixtyFour = `1.${'2'.repeat(62)}`;
  assert.equal(sixtyFour.length, 64);
  assert.equal(isValidUid(sixtyFour), true);
  assert.equal(isValidUid(`${sixtyFour}3`), false);
});

test('requireUid strips trailing NUL/space padding but nothing else', () => {
  assert.equal(requireUid('X', '1.2.3\0'), '1.2.3');
  assert.equal(requireUid('X', '1.2.3 '), '1.2.3');
  assert.equal(requireUid('X', '1.2.3\0\0'), '1.2.3');
  assert.throws(() => requireUid('X', ' 1.2.3'), InvalidUidError);
  assert.throws(() => requireUid('X', '1.2\0.3'), InvalidUidError);
  // Padding does not count towards a valid UID: 64 characters plus one pad byte is fine, 65 real ones are not.
  assert.equal(requireUid('X', `1.${'2'.repeat(62)}\0`), `1.${'2'.repeat(62)}`);
});

test('requireUid throws InvalidUidError naming the field', () => {
  for (const value of ['../1.2', '../../etc', '1..2', '', undefined, '1.2.3/4']) {
    assert.throws(
      () => requireUid('StudyInstanceUID', value),
      (err: unknown) =>
        err instanceof InvalidUidError && err.field === 'StudyInstanceUID' && err.value === value,
    );
  }
});

test('uidFromName is deterministic, distinct per name, and valid', () => {
  const a = uidFromName('study-1:model@1');
  assert.equal(uidFromName('study-1:model@1'), a);
  assert.notEqual(uidFromName('study-1:model@2'), a);
  assert.match(a, /^2\.25\.[1-9][0-9]*$/);
  assert.equal(isValidUid(a), true);
});

test('newUid yields valid, distinct 2.25 UIDs', () => {
  const seen = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const uid = newUid();
    assert.equal(isValidUid(uid), true, uid);
    assert.ok(uid.startsWith('2.25.'));
    seen.add(uid);
  }
  assert.equal(seen.size, 1000);
});
