import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import dcmjs from 'dcmjs';
import { parseDicom } from './dicom-tools.ts';

export const ENHANCED_MR_IMAGE_STORAGE = '1.2.840.10008.5.1.4.1.1.4.1';

/**
 * Single-frame slices of one series as one Enhanced MR multi-frame object, the shape scanners send
 * instead of a series of files: the slices' stored pixels become frames in the order given, each
 * frame's Image Position goes in its Plane Position functional group, and orientation, pixel spacing,
 * rescale and window are shared. The sample set has no enhanced object with pixel data and geometry,
 * so the tests make one from a real series. Returns the header as dcmjs reads it back.
 */
export async function writeEnhancedFromSlices(
  files: string[],
  out: string,
  uids: { sopInstanceUid: string; seriesInstanceUid: string },
): Promise<Record<string, unknown>> {
  const slices = files.map((f) => parseDicom(readFileSync(f), true));
  const first = slices[0]!;
  const frameBytes =
    (first.Rows as number) * (first.Columns as number) * ((first.BitsAllocated as number) / 8);
  const pixels = new Uint8Array(frameBytes * slices.length);
  slices.forEach((s, i) => {
    const data = new Uint8Array((s.PixelData as ArrayBuffer[])[0]!, 0, frameBytes);
    pixels.set(data, i * frameBytes);
  });
  const copied = [
    'SpecificCharacterSet',
    'StudyInstanceUID',
    'StudyDate',
    'StudyTime',
    'StudyID',
    'AccessionNumber',
    'ReferringPhysicianName',
    'PatientName',
    'PatientID',
    'PatientBirthDate',
    'PatientSex',
    'FrameOfReferenceUID',
    'PositionReferenceIndicator',
    'Modality',
    'BodyPartExamined',
    'Manufacturer',
    'Rows',
    'Columns',
    'SamplesPerPixel',
    'PhotometricInterpretation',
    'BitsAllocated',
    'BitsStored',
    'HighBit',
    'PixelRepresentation',
  ];
  const ds: Record<string, unknown> = Object.fromEntries(
    copied.filter((k) => first[k] !== undefined).map((k) => [k, first[k]]),
  );
  Object.assign(ds, {
    SOPClassUID: ENHANCED_MR_IMAGE_STORAGE,
    SOPInstanceUID: uids.sopInstanceUid,
    SeriesInstanceUID: uids.seriesInstanceUid,
    SeriesNumber: 1,
    InstanceNumber: 1,
    ImageType: ['ORIGINAL', 'PRIMARY', 'T1', 'NONE'],
    NumberOfFrames: slices.length,
    SharedFunctionalGroupsSequence: [
      {
        PlaneOrientationSequence: [{ ImageOrientationPatient: first.ImageOrientationPatient }],
        PixelMeasuresSequence: [{ PixelSpacing: first.PixelSpacing, SliceThickness: first.SliceThickness }],
        ...(first.WindowCenter !== undefined
          ? { FrameVOILUTSequence: [{ WindowCenter: first.WindowCenter, WindowWidth: first.WindowWidth }] }
          : {}),
        ...(first.RescaleSlope !== undefined
          ? {
              PixelValueTransformationSequence: [
                {
                  RescaleSlope: first.RescaleSlope,
                  RescaleIntercept: first.RescaleIntercept,
                  RescaleType: 'US',
                },
              ],
            }
          : {}),
      },
    ],
    PerFrameFunctionalGroupsSequence: slices.map((s, i) => ({
      FrameContentSequence: [{ StackID: '1', InStackPositionNumber: i + 1 }],
      PlanePositionSequence: [{ ImagePositionPatient: s.ImagePositionPatient }],
    })),
    PixelData: [pixels.buffer],
    _vrMap: { PixelData: 'OW' },
  });
  const { DicomDict, DicomMetaDictionary } = dcmjs.data;
  const meta = {
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: ENHANCED_MR_IMAGE_STORAGE,
    MediaStorageSOPInstanceUID: uids.sopInstanceUid,
    TransferSyntaxUID: '1.2.840.10008.1.2.1',
    ImplementationClassUID: '2.25.2',
  };
  const dict = new DicomDict(DicomMetaDictionary.denaturalizeDataset(meta));
  dict.dict = DicomMetaDictionary.denaturalizeDataset(ds);
  const bytes = Buffer.from(dict.write());
  await writeFile(out, bytes);
  return parseDicom(bytes);
}

/**
 * Checks that every frame of a SEG is derived from one frame of the enhanced source object and lies
 * where that frame lies; returns the source frame numbers referenced.
 */
export function assertSegFramesReferenceSource(
  seg: Record<string, unknown>,
  source: Record<string, unknown>,
): Set<number> {
  type Item = Record<string, unknown>;
  const sourceFrames = source.PerFrameFunctionalGroupsSequence as Item[];
  const frames = seg.PerFrameFunctionalGroupsSequence as Item[];
  assert.ok(frames.length > 0, 'the SEG has frames');
  const referenced = new Set<number>();
  for (const f of frames) {
    const ref = ((f.DerivationImageSequence as Item[])[0]!.SourceImageSequence as Item[])[0]!;
    assert.equal(ref.ReferencedSOPInstanceUID, source.SOPInstanceUID);
    const n = ref.ReferencedFrameNumber as number;
    assert.ok(Number.isInteger(n) && n >= 1 && n <= sourceFrames.length, `frame number ${n}`);
    referenced.add(n);
    const expected = (sourceFrames[n - 1]!.PlanePositionSequence as Item[])[0]!
      .ImagePositionPatient as number[];
    const actual = (f.PlanePositionSequence as Item[])[0]!.ImagePositionPatient as number[];
    actual.forEach((v, k) =>
      assert.ok(Math.abs(Number(v) - Number(expected[k])) < 1e-3, `frame ${n} position`),
    );
  }
  return referenced;
}
