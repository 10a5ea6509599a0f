import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normaliseValue, type NormaliseOptions } from '../../../src/dicom/value-normalise.ts';

// Legacy values as older scanners, RIS and hand-edited files write them, and what each VR makes of them.

function norm(vr: string, value: unknown, opts?: NormaliseOptions): unknown {
  const r = normaliseValue(vr, value, opts);
  return r.kind === 'omitted' ? { omitted: r.reason } : r.value;
}

function assertOmitted(vr: string, value: unknown, opts?: NormaliseOptions): string {
  const r = normaliseValue(vr, value, opts);
  assert.equal(r.kind, 'omitted', `${vr} ${JSON.stringify(value)} → ${JSON.stringify(r)}`);
  const reason = (r as { reason: string }).reason;
  // The reason names the rule, never the value (it may be patient data).
  if (typeof value === 'string' && value.trim().length > 2) assert.ok(!reason.includes(value.trim()), reason);
  return reason;
}

test('DA: dotted, dashed and slashed dates become YYYYMMDD; impossible ones are refused', () => {
  const cases: [string, string][] = [
    ['19970424', '19970424'],
    ['1997.04.24', '19970424'],
    ['1997-04-24', '19970424'],
    ['1997/04/24', '19970424'],
    ['1997.4.2', '19970402'],
    [' 19970424 ', '19970424'],
    ['19970424\0', '19970424'],
    ['2000.02.29', '20000229'],
    ['', ''],
  ];
  for (const [input, expected] of cases) assert.equal(norm('DA', input), expected, JSON.stringify(input));
  for (const bad of [
    'hello',
    '1997.13.01',
    '19970230',
    '1900-02-29',
    '97.04.24',
    '1997-04.24',
    '199704241',
    '1997',
  ])
    assertOmitted('DA', bad);
  assert.equal(normaliseValue('DA', '19970424').kind, 'kept');
  assert.equal(normaliseValue('DA', '1997.04.24').kind, 'normalised');
});

test('TM: colons go, fractions keep at most six digits; impossible times are refused', () => {
  const cases: [string, string][] = [
    ['123045', '123045'],
    ['12:30:45.123', '123045.123'],
    ['12:30:45,5', '123045.5'],
    ['12:30', '1230'],
    ['12', '12'],
    ['123045.1234567', '123045.123456'],
    ['23:59:60', '235960'],
    ['123045 ', '123045'],
    ['\x0012:30:45\x00', '123045'],
  ];
  for (const [input, expected] of cases) assert.equal(norm('TM', input), expected, JSON.stringify(input));
  for (const bad of ['noon', '25:00', '12:61', '12:30:61', '12:3045', '1230.5', '1:30'])
    assertOmitted('TM', bad);
});

test('DT: ISO 8601 forms become YYYYMMDDHHMMSS.FFFFFF&ZZXX', () => {
  const cases: [string, string][] = [
    ['20240517134530', '20240517134530'],
    ['2024-05-17T13:45:30', '20240517134530'],
    ['2024-05-17 13:45:30.5+02:00', '20240517134530.5+0200'],
    ['2024-05-17T13:45:30Z', '20240517134530+0000'],
    ['2024.05.17', '20240517'],
    ['2024', '2024'],
    ['20240517134530.1234567-0500', '20240517134530.123456-0500'],
  ];
  for (const [input, expected] of cases) assert.equal(norm('DT', input), expected, JSON.stringify(input));
  for (const bad of ['yesterday', '2024-13-01', '2024-05-17T25:00', '20240517+1500'])
    assertOmitted('DT', bad);
});

test('text VRs: NULs, padding, control characters and backslashes go; over-long values are cut to the VR', () => {
  assert.equal(norm('LO', 'Head CT\0\0'), 'Head CT');
  assert.equal(norm('LO', '  Head CT   '), 'Head CT');
  assert.equal(norm('LO', 'Head\tCT\x07'), 'Head CT');
  assert.equal(norm('LO', 'Head\\CT'), 'Head CT');
  assert.equal(norm('LO', 'Head\x85CT'), 'Head CT', 'C1 control');
  assert.equal(norm('LO', 'x'.repeat(200)), 'x'.repeat(64));
  assert.equal(norm('SH', 'ACC-2024-0000000001234'), 'ACC-2024-0000000');
  assert.equal(String(norm('SH', 'ACC-2024-0000000001234')).length, 16);
  // Cut on characters: a character outside the BMP is never split.
  const emoji = '😀'.repeat(70);
  assert.equal(norm('LO', emoji), '😀'.repeat(64));
  assert.equal(norm('LO', 'é'.repeat(70)), 'é'.repeat(64));
  // A cut never leaves trailing spaces.
  assert.equal(norm('SH', `${'a'.repeat(15)}  b`), 'a'.repeat(15));
  // Paragraph text keeps line breaks and backslashes, loses other controls and trailing spaces.
  assert.equal(norm('LT', '  line 1\r\nline 2\\x\x01  '), '  line 1\r\nline 2\\x');
  assert.equal(norm('ST', 's'.repeat(2000)), 's'.repeat(1024));
  assert.equal(norm('LT', 'l'.repeat(20000)), 'l'.repeat(10240));
  // Several values in a single-valued text attribute: one text.
  assert.equal(norm('LO', ['CHEST', 'PA']), 'CHEST PA');
  // Valid values are returned as they are.
  const valid = 'Müller Hans';
  const r = normaliseValue('LO', valid);
  assert.equal(r.kind, 'kept');
  assert.equal(r.kind === 'kept' && r.value, valid);
});

test('ISO 2022 text: ESC is kept, over-long values are refused rather than cut', () => {
  const jis = '\x1b$B;3ED\x1b(B';
  assert.equal(norm('LO', jis, { codeExtensions: true }), jis);
  assert.equal(norm('LO', jis), ' $B;3ED (B'.trim(), 'without code extensions ESC is a control character');
  const long = `${jis}${'a'.repeat(60)}`;
  const reason = assertOmitted('LO', long, { codeExtensions: true });
  assert.match(reason, /ISO 2022/);
  const name = [{ Alphabetic: 'Yamada^Tarou', Ideographic: '\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B' }];
  const kept = normaliseValue('PN', name, { codeExtensions: true });
  assert.equal(kept.kind, 'kept');
  assert.equal(
    kept.kind === 'kept' && kept.value,
    name,
    'the same object: the bytes written are the source bytes',
  );
  assertOmitted('PN', [{ Alphabetic: 'Y', Ideographic: `\x1b$B${';3'.repeat(40)}\x1b(B` }], {
    codeExtensions: true,
  });
});

test('PN: a valid name is untouched; each component group is cleaned and cut to 64 characters', () => {
  const valid = [{ Alphabetic: 'Doe^John', Ideographic: '山田^太郎' }];
  assert.equal(normaliseValue('PN', valid).kind, 'kept');
  assert.deepEqual(norm('PN', [{ Alphabetic: 'Doe^John\0' }]), [{ Alphabetic: 'Doe^John' }]);
  assert.deepEqual(norm('PN', [{ Alphabetic: `${'D'.repeat(80)}^John` }]), [{ Alphabetic: 'D'.repeat(64) }]);
  assert.deepEqual(norm('PN', [{ Alphabetic: 'Doe\\^John\x01' }]), [{ Alphabetic: 'Doe ^John' }]);
  assert.equal(norm('PN', 'Doe^John=山田^太郎'), 'Doe^John=山田^太郎');
  assert.equal(norm('PN', 'Doe^John  '), 'Doe^John');
  assertOmitted('PN', 'a=b=c=d');
  assertOmitted('PN', [{ Alphabetic: 'A' }, { Alphabetic: 'B' }]);
  assert.equal(
    normaliseValue('PN', [{ Alphabetic: 'A' }, { Alphabetic: 'B' }], { multiple: true }).kind,
    'kept',
  );
});

test('CS: upper case, only A-Z 0-9 space and underscore, 16 characters', () => {
  assert.equal(norm('CS', 'm'), 'M');
  assert.equal(norm('CS', 'head first-supine'), 'HEAD FIRST_SUPIN');
  assert.equal(norm('CS', 'ORIGINAL '), 'ORIGINAL');
  assert.equal(norm('CS', 'f\0'), 'F');
  assert.equal(normaliseValue('CS', 'ORIGINAL').kind, 'kept');
  assertOmitted('CS', ['ORIGINAL', 'PRIMARY']);
  assert.deepEqual(norm('CS', ['original', 'PRIMARY'], { multiple: true }), ['ORIGINAL', 'PRIMARY']);
});

test('AE, AS, UI', () => {
  assert.equal(norm('AE', ' MODALITY_WITH_A_LONG_NAME '), 'MODALITY_WITH_A_');
  assert.equal(norm('AE', 'PACS\\1'), 'PACS 1');
  assert.equal(norm('AS', '045y'), '045Y');
  assertOmitted('AS', '45 years');
  assert.equal(norm('UI', '1.2.840.10008.1.2\0'), '1.2.840.10008.1.2');
  assertOmitted('UI', '1.2.03');
  assertOmitted('UI', 'not-a-uid');
  assertOmitted('UI', `1.${'2'.repeat(70)}`);
});

test('DS and IS: numbers as dcmjs gives them or strings, fitted to 16 / 12 characters', () => {
  assert.equal(norm('DS', 1.5), 1.5);
  assert.equal(norm('DS', 1 / 3), '0.33333333333333');
  assert.equal(norm('DS', ' 0.5 '), '0.5');
  assert.equal(norm('DS', '0.123456789012345678'), '0.12345678901235');
  assert.equal(norm('DS', '1e3'), '1e3');
  assertOmitted('DS', 'n/a');
  assertOmitted('DS', Number.NaN);
  assert.equal(norm('IS', 12), 12);
  assert.equal(norm('IS', ' 12 '), '12');
  assert.equal(norm('IS', '12.0'), '12');
  assert.equal(norm('IS', '0000000000012'), '12');
  assertOmitted('IS', '12.5');
  assertOmitted('IS', '99999999999');
  assertOmitted('IS', 'twelve');
});

test('absent values stay absent; several values in a single-valued attribute are refused', () => {
  assert.equal(normaliseValue('DA', undefined).kind, 'kept');
  assert.equal(normaliseValue('LO', null).kind, 'kept');
  assert.equal(normaliseValue('DA', []).kind, 'kept');
  assert.equal(norm('DA', ['1997.04.24']), '19970424');
  assertOmitted('DA', ['19970424', '19980101']);
  assert.deepEqual(norm('DA', ['1997.04.24', '19980101'], { multiple: true }), ['19970424', '19980101']);
  assertOmitted('DA', 19970424);
});
