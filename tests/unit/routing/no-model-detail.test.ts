import assert from 'node:assert/strict';
import { test } from 'node:test';
import { noModelDetail } from '../../../src/routing/decisions.ts';
import type { SeriesRoutingRecord } from '../../../src/pipeline/study-index.ts';

// The one-line reason of a 'no-model' study names, per model, the rule that came nearest to taking the
// series: one whose own match held and whose model criteria failed, not one for another sender.

const record = (reasons: string[]): SeriesRoutingRecord => ({
  seriesUid: '1.2.3',
  source: 'none',
  models: { 'cxr@1': { accepted: false, rules: [], reasons } },
});

test('under rules, the reasons of the rule that matched the series are shown, not a rule for another sender', () => {
  const detail = noModelDetail(
    [
      record([
        '[er-chest] callingAE: "MODALITY1" does not match [ER_CR]',
        '[everything] rows: 16 < 64',
        '[everything] columns: 16 < 64',
      ]),
    ],
    1,
  );
  assert.equal(
    detail,
    'no model accepts this study: cxr@1 on 1.2.3: [everything] rows: 16 < 64, [everything] columns: 16 < 64',
  );
});

test('among matching rules the one with the fewest failed criteria; a rule not naming the model comes last', () => {
  const detail = noModelDetail(
    [
      record([
        '[ct-only] models: "cxr" not in [brain]',
        '[wide] modality: "XC" not in [CR, DX]',
        '[wide] rows: 16 < 64',
        '[narrow] modality: "XC" not in [CR]',
      ]),
    ],
    1,
  );
  assert.equal(detail, 'no model accepts this study: cxr@1 on 1.2.3: [narrow] modality: "XC" not in [CR]');
});

test('without rules every reason is shown (up to four)', () => {
  const detail = noModelDetail([record(['rows: 16 < 64', 'columns: 16 < 64'])], 1);
  assert.equal(detail, 'no model accepts this study: cxr@1 on 1.2.3: rows: 16 < 64, columns: 16 < 64');
  assert.equal(noModelDetail([], 1), 'the study holds no series');
  assert.equal(noModelDetail([record(['x'])], 0), 'no model is loaded');
});
