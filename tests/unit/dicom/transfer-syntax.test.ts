// The one transfer-syntax table: ingest and the decoder read it, and they agree on every syntax.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  INGEST_TRANSFER_SYNTAXES,
  TRANSFER_SYNTAXES,
  pixelDecoderFor,
} from '../../../src/dicom/transfer-syntax.ts';
import { checkHeader, STATUS_TRANSFER_SYNTAX_NOT_SUPPORTED } from '../../../src/ingest/accept.ts';
import { chooseTransferSyntax, STORED_TRANSFER_SYNTAXES } from '../../../src/ingest/dimse/policy.ts';

test('every syntax ingest accepts has a pixel decoder; each UID is listed once', () => {
  const uids = TRANSFER_SYNTAXES.map((t) => t.uid);
  assert.equal(new Set(uids).size, uids.length);
  for (const uid of INGEST_TRANSFER_SYNTAXES) assert.ok(pixelDecoderFor(uid), `${uid} has no decoder`);
  assert.equal(pixelDecoderFor('1.2.840.10008.1.2.4.55'), undefined, 'JPEG progressive is not read');
});

test('DIMSE negotiation and STOW-RS accept exactly the ingest column of the table', () => {
  assert.equal(STORED_TRANSFER_SYNTAXES, INGEST_TRANSFER_SYNTAXES);
  for (const t of TRANSFER_SYNTAXES) {
    assert.equal(chooseTransferSyntax([t.uid]), t.ingest ? t.uid : undefined, t.name);
    const header = {
      studyUid: '1.2.3',
      seriesUid: '1.2.3.4',
      sopInstanceUid: '1.2.3.4.5',
      sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
      transferSyntaxUid: t.uid,
    };
    const checked = checkHeader(header, {});
    if (t.ingest) assert.ok(checked.ok, t.name);
    else assert.equal(!checked.ok && checked.status, STATUS_TRANSFER_SYNTAX_NOT_SUPPORTED, t.name);
  }
  const progressive = checkHeader(
    {
      studyUid: '1.2.3',
      seriesUid: '1.2.3.4',
      sopInstanceUid: '1.2.3.4.5',
      sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
      transferSyntaxUid: '1.2.840.10008.1.2.4.55',
    },
    {},
  );
  assert.equal(!progressive.ok && progressive.status, STATUS_TRANSFER_SYNTAX_NOT_SUPPORTED);
});
