import assert from 'node:assert/strict';
import { test } from 'node:test';
import dimse from 'dcmjs-dimse';
import { encodeCStoreResponsePdu } from '../../../src/ingest/dimse/store-response.ts';

function libraryCommand(sopClassUid: string, sopInstanceUid: string, messageId: number): Buffer {
  const request = new dimse.requests.CStoreRequest(
    new dimse.Dataset({ SOPClassUID: sopClassUid, SOPInstanceUID: sopInstanceUid }, '1.2.840.10008.1.2'),
  );
  request.setMessageId(messageId);
  const response = dimse.responses.CStoreResponse.fromRequest(request);
  response.setStatus(dimse.constants.Status.Success);
  const command = response.getCommandDataset() as unknown as {
    getDenaturalizedCommandDataset(): ArrayBuffer;
  };
  return Buffer.from(command.getDenaturalizedCommandDataset());
}

test('the hand-encoded C-STORE-RSP command is byte for byte what dcmjs-dimse encodes', () => {
  // Odd and even UID lengths (NUL padding), a message id above 255 (byte order).
  for (const [cls, inst, id] of [
    ['1.2.840.10008.5.1.4.1.1.2', '1.2.3.4.5', 77],
    ['1.2.840.10008.5.1.4.1.1.4', '2.25.123456789012345678901234567890', 65535],
  ] as const) {
    const pdu = encodeCStoreResponsePdu({
      presentationContextId: 5,
      messageId: id,
      sopClassUid: cls,
      sopInstanceUid: inst,
      status: 0,
    });
    assert.deepEqual(pdu.subarray(12), libraryCommand(cls, inst, id));
    assert.equal(pdu[0], 0x04, 'P-DATA-TF');
    assert.equal(pdu.readUInt32BE(2), pdu.length - 6, 'PDU length');
    assert.equal(pdu.readUInt32BE(6), pdu.length - 10, 'PDV item length');
    assert.equal(pdu[10], 5, 'presentation context id');
    assert.equal(pdu[11], 0x03, 'command, last fragment');
  }
});
