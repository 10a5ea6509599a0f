// Synthetic CT data for the ingest benchmark, written with the project's own Part-10 writer (dcmjs): a
// 512×512 16-bit series with a smooth phantom per slice, fresh UIDs for every series so no receiver can
// skip an instance it already has.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { newUid } from '../../src/dicom/uid.ts';
import { writePart10 } from '../../src/reports/derived-object.ts';

const CT_IMAGE_STORAGE = '1.2.840.10008.5.1.4.1.1.2';

export interface SeriesSpec {
  dir: string;
  instances: number;
  rows?: number;
  columns?: number;
  /** Frames per instance (>1 makes big multi-frame instances for the memory test). */
  frames?: number;
}

/** Writes the series and returns the file paths, in instance order. */
export async function synthesizeCtSeries(spec: SeriesSpec): Promise<string[]> {
  const rows = spec.rows ?? 512;
  const columns = spec.columns ?? 512;
  const frames = spec.frames ?? 1;
  await mkdir(spec.dir, { recursive: true });
  const studyUid = newUid();
  const seriesUid = newUid();
  const files: string[] = [];
  const pixels = new Uint16Array(rows * columns * frames);
  for (let i = 0; i < spec.instances; i++) {
    fillPhantom(pixels, rows, columns, frames, i);
    const ds = {
      SOPClassUID: CT_IMAGE_STORAGE,
      SOPInstanceUID: newUid(),
      StudyInstanceUID: studyUid,
      SeriesInstanceUID: seriesUid,
      Modality: 'CT',
      PatientName: 'BENCH^SYNTHETIC',
      PatientID: 'BENCH-0001',
      StudyDate: '20260101',
      StudyTime: '120000',
      SeriesNumber: '1',
      InstanceNumber: String(i + 1),
      SeriesDescription: 'ingest benchmark',
      ImagePositionPatient: [0, 0, i * 1.25],
      ImageOrientationPatient: [1, 0, 0, 0, 1, 0],
      PixelSpacing: [0.7, 0.7],
      SliceThickness: '1.25',
      SamplesPerPixel: 1,
      PhotometricInterpretation: 'MONOCHROME2',
      Rows: rows,
      Columns: columns,
      ...(frames > 1 ? { NumberOfFrames: String(frames) } : {}),
      BitsAllocated: 16,
      BitsStored: 12,
      HighBit: 11,
      PixelRepresentation: 0,
      RescaleIntercept: '-1024',
      RescaleSlope: '1',
      PixelData: [pixels.buffer],
      _vrMap: { PixelData: 'OW' },
    };
    const file = path.join(spec.dir, `ct-${String(i + 1).padStart(4, '0')}.dcm`);
    await writeFile(file, writePart10(ds as Parameters<typeof writePart10>[0]));
    files.push(file);
  }
  return files;
}

/** A water cylinder with a few denser rods, shifted a little per slice so no two slices are equal. */
function fillPhantom(px: Uint16Array, rows: number, columns: number, frames: number, slice: number): void {
  const cx = columns / 2;
  const cy = rows / 2;
  const r2 = (Math.min(rows, columns) * 0.45) ** 2;
  for (let f = 0; f < frames; f++) {
    const base = f * rows * columns;
    for (let y = 0; y < rows; y++) {
      for (let x = 0; x < columns; x++) {
        const d2 = (x - cx) ** 2 + (y - cy) ** 2;
        let v = d2 < r2 ? 1024 : 24;
        if (((x + slice + f) >> 5) % 4 === 0 && ((y + slice) >> 5) % 4 === 0 && d2 < r2) v += 400;
        px[base + y * columns + x] = v + ((x * 7 + y * 13 + slice) & 15);
      }
    }
  }
}
