import { writeFile } from 'node:fs/promises';
import dcmjs from 'dcmjs';

/**
 * A minimal single-frame Part-10 image written with dcmjs, for pixel layouts the sample set has no file
 * for. `attrs` overrides the defaults (OT, MONOCHROME2, 16 bits allocated, Explicit VR LE).
 */
export async function writeSynthetic(
  file: string,
  attrs: Record<string, unknown>,
  pixels: Uint16Array | Uint8Array,
  transferSyntaxUid = '1.2.840.10008.1.2.1',
): Promise<void> {
  const { DicomDict, DicomMetaDictionary } = dcmjs.data;
  const sopClass = '1.2.840.10008.5.1.4.1.1.7';
  const meta = {
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: sopClass,
    MediaStorageSOPInstanceUID: '2.25.1',
    TransferSyntaxUID: transferSyntaxUid,
    ImplementationClassUID: '2.25.2',
  };
  const dict = new DicomDict(DicomMetaDictionary.denaturalizeDataset(meta));
  dict.dict = DicomMetaDictionary.denaturalizeDataset({
    SOPClassUID: sopClass,
    SOPInstanceUID: '2.25.1',
    Modality: 'OT',
    SamplesPerPixel: 1,
    PhotometricInterpretation: 'MONOCHROME2',
    BitsAllocated: 16,
    ...attrs,
    PixelData: [pixels.buffer.slice(pixels.byteOffset, pixels.byteOffset + pixels.byteLength)],
    _vrMap: { PixelData: pixels instanceof Uint8Array ? 'OB' : 'OW' },
  });
  await writeFile(file, Buffer.from(dict.write()));
}
