// Reading hostile MPPS data sets: only what completion needs, checked and bounded; each fault maps to the
// PS3.4 F.7.2 status the SCP answers.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  MAX_ANNOUNCED_INSTANCES,
  MPPS_STATUS,
  MppsRefusal,
  readCreate,
  readSet,
} from '../../../src/ingest/dimse/mpps.ts';

const STUDY = '1.2.826.0.1.3680043.99.9';

function refusal(fn: () => unknown): number {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof MppsRefusal, String(err));
    return err.status;
  }
  assert.fail('not refused');
}

test('N-CREATE: the study, the state and the announced instances are read; padding is trimmed', () => {
  const step = readCreate(
    {
      PerformedProcedureStepStatus: 'IN PROGRESS ',
      ScheduledStepAttributesSequence: [{ StudyInstanceUID: `${STUDY}\0` }, { StudyInstanceUID: STUDY }],
      PerformedSeriesSequence: [
        {
          SeriesInstanceUID: `${STUDY}.1`,
          ReferencedImageSequence: [{ ReferencedSOPInstanceUID: `${STUDY}.1.1` }],
          ReferencedNonImageCompositeSOPInstanceSequence: { ReferencedSOPInstanceUID: `${STUDY}.1.2` },
        },
      ],
      PatientName: 'Must^Not^Matter',
    },
    'MODALITY1',
  );
  assert.deepEqual(step, {
    studies: [STUDY],
    state: 'IN PROGRESS',
    series: [{ seriesUid: `${STUDY}.1`, instances: [`${STUDY}.1.1`, `${STUDY}.1.2`] }],
    callingAe: 'MODALITY1',
  });
});

test('N-CREATE refusals: status, study, UIDs, bounds', () => {
  const base = {
    PerformedProcedureStepStatus: 'IN PROGRESS',
    ScheduledStepAttributesSequence: [{ StudyInstanceUID: STUDY }],
  };
  assert.equal(
    refusal(() => readCreate({ ...base, PerformedProcedureStepStatus: undefined }, '')),
    MPPS_STATUS.missingAttribute,
  );
  assert.equal(
    refusal(() => readCreate({ ...base, PerformedProcedureStepStatus: 'COMPLETED' }, '')),
    MPPS_STATUS.invalidAttributeValue,
  );
  assert.equal(
    refusal(() => readCreate({ ...base, ScheduledStepAttributesSequence: [] }, '')),
    MPPS_STATUS.missingAttribute,
  );
  assert.equal(
    refusal(() =>
      readCreate({ ...base, ScheduledStepAttributesSequence: [{ StudyInstanceUID: '1.02' }] }, ''),
    ),
    MPPS_STATUS.invalidAttributeValue,
  );
  assert.equal(
    refusal(() => readCreate({ ...base, PerformedSeriesSequence: [{ SeriesInstanceUID: 'x' }] }, '')),
    MPPS_STATUS.invalidAttributeValue,
  );
  const tooMany = Array.from({ length: MAX_ANNOUNCED_INSTANCES + 1 }, (_, i) => ({
    ReferencedSOPInstanceUID: `${STUDY}.2.${i}`,
  }));
  assert.equal(
    refusal(() =>
      readCreate(
        {
          ...base,
          PerformedSeriesSequence: [{ SeriesInstanceUID: `${STUDY}.2`, ReferencedImageSequence: tooMany }],
        },
        '',
      ),
    ),
    MPPS_STATUS.invalidAttributeValue,
  );
});

test('N-SET: status, series and reason are each optional; an unknown status is refused', () => {
  assert.deepEqual(readSet({}), {});
  assert.deepEqual(
    readSet({
      PerformedProcedureStepStatus: 'DISCONTINUED',
      PerformedProcedureStepDiscontinuationReasonCodeSequence: [
        { CodeValue: '110514', CodeMeaning: 'Wrong worklist entry' },
      ],
      PerformedSeriesSequence: [],
    }),
    { state: 'DISCONTINUED', series: [], reason: 'Wrong worklist entry' },
  );
  assert.equal(
    refusal(() => readSet({ PerformedProcedureStepStatus: 'DONE' })),
    MPPS_STATUS.invalidAttributeValue,
  );
  assert.equal(
    refusal(() => readSet({ PerformedProcedureStepStatus: 42 })),
    MPPS_STATUS.invalidAttributeValue,
  );
});
