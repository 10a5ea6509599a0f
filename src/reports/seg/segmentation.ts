// Builds a DICOM Segmentation (PS3.3 A.51) from a model's label maps: BINARY, 1 bit per pixel, one
// frame per segment per source slice where the segment is present, in the source study and frame
// of reference. Each frame says which source image it was derived from (DerivationImageSequence)
// and where it lies (PlanePositionSequence), so viewers overlay it on the images without resampling.
import { frameGeometry, frameGroupValue, type SliceGeometry } from '../../dicom/functional-groups.ts';
import { requireUid, uidFromName } from '../../dicom/uid.ts';
import type { CodedConcept, ModelResult, SegmentationResult } from '../../pipeline/findings.ts';
import { codeSequenceItem, formatDecimalString, loValue, type Dataset } from '../sr/content.ts';
import {
  derivedObjectHeader,
  dicomDateTime,
  referencedSeries,
  ReportInputError,
  SR_MANUFACTURER,
  writePart10,
} from '../derived-object.ts';

export const SEGMENTATION_SOP_CLASS = '1.2.840.10008.5.1.4.1.1.66.4';

const CODES = {
  segmentation: { value: '113076', scheme: 'DCM', meaning: 'Segmentation' },
  sourceImage: { value: '121322', scheme: 'DCM', meaning: 'Source image for image processing operation' },
  anatomicalStructure: { value: '91723000', scheme: 'SCT', meaning: 'Anatomical Structure' },
} satisfies Record<string, CodedConcept>;

export interface SegmentationInput {
  result: ModelResult & { segmentation: SegmentationResult };
  /** Naturalized headers of result.sources, same order (geometry and patient/study attributes). */
  sourceHeaders: Record<string, unknown>[];
  sopInstanceUid: string;
  seriesInstanceUid: string;
  seriesNumber?: number;
  instanceNumber?: number;
  now?: Date;
}

interface Slice {
  index: number;
  sopClassUid: string;
  sopInstanceUid: string;
  seriesUid: string;
  /** Frame of a multi-frame source image, 1-based. */
  frameNumber?: number;
  position: number[];
  /** Position along the slice normal, for the dimension index. */
  depth: number;
}

/** The SEG as a Part-10 file, or undefined when no segment is present anywhere (nothing to show). */
export function buildSegmentation(input: SegmentationInput): Buffer | undefined {
  const { result, sourceHeaders } = input;
  const seg = result.segmentation;
  const sopInstanceUid = requireUid('sopInstanceUid', input.sopInstanceUid);
  const seriesInstanceUid = requireUid('seriesInstanceUid', input.seriesInstanceUid);
  if (result.sources.length === 0) throw new ReportInputError('a segmentation needs source images');
  if (sourceHeaders.length !== result.sources.length || seg.slices.length !== result.sources.length) {
    throw new ReportInputError(
      `segmentation has ${seg.slices.length} slices and ${sourceHeaders.length} headers for ${result.sources.length} sources`,
    );
  }
  const first = sourceHeaders[0]!;
  const studyUid = requireUid('StudyInstanceUID', first.StudyInstanceUID);
  const frameOfReference = requireUid('FrameOfReferenceUID', first.FrameOfReferenceUID);
  const firstGeometry = geometryOf(first, result.sources[0]!.frameNumber, 0);
  const orientation = firstGeometry.orientation;
  const spacing = firstGeometry.pixelSpacing;
  const { rows, columns } = seg;
  if (
    !Number.isInteger(rows) ||
    !Number.isInteger(columns) ||
    rows < 1 ||
    columns < 1 ||
    rows > 65535 ||
    columns > 65535
  )
    throw new ReportInputError(`segmentation size ${rows}x${columns} is invalid`);
  const normal = cross(orientation.slice(0, 3), orientation.slice(3, 6));

  const slices: Slice[] = result.sources.map((s, i) => {
    const h = sourceHeaders[i]!;
    if (h.StudyInstanceUID !== studyUid) throw new ReportInputError(`source ${i} is from another study`);
    if (h.FrameOfReferenceUID !== frameOfReference)
      throw new ReportInputError(`source ${i} is in another frame of reference`);
    if (Number(h.Rows) !== rows || Number(h.Columns) !== columns)
      throw new ReportInputError(`source ${i} is ${h.Rows}x${h.Columns}, the label map ${rows}x${columns}`);
    const geometry = geometryOf(h, s.frameNumber, i);
    if (geometry.orientation.some((v, k) => Math.abs(v - orientation[k]!) > 1e-4))
      throw new ReportInputError(`source ${i} has another orientation`);
    if (seg.slices[i]!.length !== rows * columns)
      throw new ReportInputError(
        `label map ${i} has ${seg.slices[i]!.length} values, expected ${rows * columns}`,
      );
    const position = geometry.position;
    return {
      index: i,
      sopClassUid: requireUid(`sources[${i}].sopClassUid`, s.sopClassUid),
      sopInstanceUid: requireUid(`sources[${i}].sopInstanceUid`, s.sopInstanceUid),
      seriesUid: requireUid(`sources[${i}].seriesUid`, s.seriesUid),
      ...(s.frameNumber ? { frameNumber: s.frameNumber } : {}),
      position,
      depth: dot(position, normal),
    };
  });
  // Dimension index of a slice: its rank along the normal (1-based), as viewers stack them.
  const ranked = [...slices].sort((a, b) => a.depth - b.depth);
  const positionIndex = new Map(ranked.map((s, rank) => [s.index, rank + 1]));

  const segments = validSegments(seg);
  // Frames in dimension order: segment, then position.
  const frames: { segmentNumber: number; slice: Slice; bits: (p: number) => boolean }[] = [];
  segments.forEach((segment, k) => {
    for (const slice of ranked) {
      const map = seg.slices[slice.index]!;
      if (!map.includes(segment.labelValue)) continue;
      frames.push({ segmentNumber: k + 1, slice, bits: (p) => map[p] === segment.labelValue });
    }
  });
  if (frames.length === 0) return undefined;

  const now = input.now ?? new Date();
  const { date, time, offset } = dicomDateTime(now);
  const m = result.model;
  // SOP Common, Patient, General Study, General Series + Segmentation Series
  const ds: Dataset = derivedObjectHeader({
    sopClassUid: SEGMENTATION_SOP_CLASS,
    sopInstanceUid,
    source: first,
    studyUid,
    modality: 'SEG',
    seriesInstanceUid,
    seriesNumber: input.seriesNumber ?? 9001,
    when: { date, time, offset },
  });
  ds.SeriesDescription = loValue(`AI segmentation: ${m.name}`);
  // Frame of Reference: the source's, so the SEG overlays the images.
  ds.FrameOfReferenceUID = frameOfReference;
  ds.PositionReferenceIndicator = first.PositionReferenceIndicator ?? '';
  // General + Enhanced General Equipment
  ds.Manufacturer = SR_MANUFACTURER;
  ds.ManufacturerModelName = loValue(m.name || m.id);
  ds.DeviceSerialNumber = loValue(m.id);
  ds.SoftwareVersions = loValue(m.version);
  // General Image + Segmentation Image
  ds.InstanceNumber = input.instanceNumber ?? 1;
  ds.ContentDate = date;
  ds.ContentTime = time;
  ds.ImageType = ['DERIVED', 'PRIMARY'];
  ds.ContentLabel = 'AI_SEGMENTATION';
  ds.ContentDescription = loValue(`${m.name} ${m.version}`);
  ds.ContentCreatorName = '';
  ds.SamplesPerPixel = 1;
  ds.PhotometricInterpretation = 'MONOCHROME2';
  ds.Rows = rows;
  ds.Columns = columns;
  ds.BitsAllocated = 1;
  ds.BitsStored = 1;
  ds.HighBit = 0;
  ds.PixelRepresentation = 0;
  ds.LossyImageCompression = '00';
  ds.SegmentationType = 'BINARY';
  ds.SegmentSequence = segments.map((s, k) => ({
    SegmentNumber: k + 1,
    SegmentLabel: loValue(s.label),
    SegmentedPropertyCategoryCodeSequence: [codeSequenceItem(s.category ?? CODES.anatomicalStructure)],
    SegmentedPropertyTypeCodeSequence: [codeSequenceItem(s.concept)],
    SegmentAlgorithmType: 'AUTOMATIC',
    SegmentAlgorithmName: loValue(m.name || m.id),
  }));
  // Multi-frame Dimension: frames are indexed by segment, then by position along the normal.
  const dimensionOrganizationUid = uidFromName(`${sopInstanceUid}/dimension-organization`);
  ds.DimensionOrganizationSequence = [{ DimensionOrganizationUID: dimensionOrganizationUid }];
  ds.DimensionIndexSequence = [
    {
      DimensionOrganizationUID: dimensionOrganizationUid,
      DimensionIndexPointer: 0x0062000b,
      FunctionalGroupPointer: 0x0062000a,
      DimensionDescriptionLabel: 'ReferencedSegmentNumber',
    },
    {
      DimensionOrganizationUID: dimensionOrganizationUid,
      DimensionIndexPointer: 0x00200032,
      FunctionalGroupPointer: 0x00209113,
      DimensionDescriptionLabel: 'ImagePositionPatient',
    },
  ];
  // Multi-frame Functional Groups
  ds.NumberOfFrames = frames.length;
  const thickness = frameGroupValue(
    first,
    (result.sources[0]!.frameNumber ?? 1) - 1,
    'PixelMeasuresSequence',
    'SliceThickness',
  );
  ds.SharedFunctionalGroupsSequence = [
    {
      PlaneOrientationSequence: [{ ImageOrientationPatient: orientation.map(formatDecimalString) }],
      PixelMeasuresSequence: [
        {
          PixelSpacing: spacing.map(formatDecimalString),
          SliceThickness:
            thickness !== undefined && thickness !== '' ? formatDecimalString(Number(thickness)) : '1',
        },
      ],
    },
  ];
  ds.PerFrameFunctionalGroupsSequence = frames.map((f) => ({
    DerivationImageSequence: [
      {
        SourceImageSequence: [
          {
            ReferencedSOPClassUID: f.slice.sopClassUid,
            ReferencedSOPInstanceUID: f.slice.sopInstanceUid,
            ...(f.slice.frameNumber ? { ReferencedFrameNumber: f.slice.frameNumber } : {}),
            PurposeOfReferenceCodeSequence: [codeSequenceItem(CODES.sourceImage)],
          },
        ],
        DerivationCodeSequence: [codeSequenceItem(CODES.segmentation)],
      },
    ],
    FrameContentSequence: [{ DimensionIndexValues: [f.segmentNumber, positionIndex.get(f.slice.index)!] }],
    PlanePositionSequence: [{ ImagePositionPatient: f.slice.position.map(formatDecimalString) }],
    SegmentIdentificationSequence: [{ ReferencedSegmentNumber: f.segmentNumber }],
  }));
  // Common Instance Reference: every source image once, by series.
  ds.ReferencedSeriesSequence = referencedSeries(slices, 'ReferencedInstanceSequence');
  ds.PixelData = [packFrames(frames, rows * columns)];
  ds._vrMap = { PixelData: 'OB' };
  return writePart10(ds);
}

/** 1-bit frames packed back to back, least significant bit first (PS3.5 8.1.1), padded to even length. */
function packFrames(frames: { bits: (p: number) => boolean }[], pixelsPerFrame: number): ArrayBuffer {
  const totalBits = frames.length * pixelsPerFrame;
  let bytes = Math.ceil(totalBits / 8);
  if (bytes % 2 === 1) bytes++;
  const out = new Uint8Array(bytes);
  let bit = 0;
  for (const f of frames) {
    for (let p = 0; p < pixelsPerFrame; p++, bit++) if (f.bits(p)) out[bit >> 3]! |= 1 << (bit & 7);
  }
  return out.buffer;
}

function validSegments(seg: SegmentationResult): SegmentationResult['segments'] {
  if (seg.segments.length === 0) throw new ReportInputError('a segmentation needs at least one segment');
  const seen = new Set<number>();
  for (const s of seg.segments) {
    if (!Number.isInteger(s.labelValue) || s.labelValue < 1 || s.labelValue > 255)
      throw new ReportInputError(`segment label value ${s.labelValue} must be 1-255 (0 is background)`);
    if (seen.has(s.labelValue)) throw new ReportInputError(`segment label value ${s.labelValue} is repeated`);
    seen.add(s.labelValue);
    if (s.label.trim().length === 0) throw new ReportInputError('a segment has an empty label');
  }
  return seg.segments;
}

/** Where a source image (or one frame of it) lies; a segmentation cannot be placed without it. */
function geometryOf(
  header: Record<string, unknown>,
  frameNumber: number | undefined,
  index: number,
): SliceGeometry {
  const frames = Number(header.NumberOfFrames ?? 1);
  if (
    frameNumber !== undefined &&
    !(Number.isInteger(frameNumber) && frameNumber >= 1 && frameNumber <= frames)
  )
    throw new ReportInputError(`source ${index} frame ${frameNumber} is not one of its ${frames} frames`);
  const geometry = frameGeometry(header, (frameNumber ?? 1) - 1);
  if (!geometry)
    throw new ReportInputError(
      `source ${index} has no usable Image Position/Orientation (Patient) or Pixel Spacing; a segmentation needs image geometry`,
    );
  return geometry;
}

function cross(a: number[], b: number[]): number[] {
  return [a[1]! * b[2]! - a[2]! * b[1]!, a[2]! * b[0]! - a[0]! * b[2]!, a[0]! * b[1]! - a[1]! * b[0]!];
}

function dot(a: number[], b: number[]): number {
  return a[0]! * b[0]! + a[1]! * b[1]! + a[2]! * b[2]!;
}
