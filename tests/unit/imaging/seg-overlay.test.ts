import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { inflateSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import dcmjs from 'dcmjs';
import { decodeImage } from '../../../src/imaging/decode.ts';
import {
  OVERLAY_ALPHA,
  readSegMasks,
  renderOverlay,
  representativeSlice,
  segmentColour,
} from '../../../src/imaging/seg-overlay.ts';
import { buildSegmentation } from '../../../src/reports/seg/segmentation.ts';
import type { ModelResult, SegmentationResult } from '../../../src/pipeline/findings.ts';
import { mrSlices, sourcesOf } from '../../helpers/dicom-tools.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const DCMQI_SEG = path.join(repoRoot, '../shared/dicom-samples/multiframe/seg-liver-dcmqi-3frames.dcm');

const WM = { value: '33999003', scheme: 'SCT', meaning: 'White matter' };
const GM = { value: '29811004', scheme: 'SCT', meaning: 'Gray matter' };

/** Decodes an 8-bit RGB PNG (filter type 0 rows, as png.ts writes them) to its pixels. */
function decodePng(png: Buffer): { width: number; height: number; rgb: Uint8Array } {
  const width = png.readUInt32BE(16);
  const height = png.readUInt32BE(20);
  assert.equal(png[25], 2, 'RGB');
  const idat: Buffer[] = [];
  for (let at = 8; at < png.length;) {
    const len = png.readUInt32BE(at);
    if (png.toString('latin1', at + 4, at + 8) === 'IDAT') idat.push(png.subarray(at + 8, at + 8 + len));
    at += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    assert.equal(raw[y * (width * 3 + 1)], 0);
    rgb.set(raw.subarray(y * (width * 3 + 1) + 1, (y + 1) * (width * 3 + 1)), y * width * 3);
  }
  return { width, height, rgb };
}

/**
 * Four real sagittal MR slices with label maps: white matter a square growing slice by slice (the last
 * the largest), grey matter a bar on slice 1 only.
 */
function fixture() {
  const mr = sourcesOf(mrSlices(10, 14));
  const headers = mr.map((x) => x.header);
  const rows = headers[0]!.Rows as number;
  const columns = headers[0]!.Columns as number;
  const sides = [20, 30, 40, 50];
  const slices = sides.map((side, i) => {
    const map = new Uint8Array(rows * columns);
    for (let r = 100; r < 100 + side; r++) for (let c = 100; c < 100 + side; c++) map[r * columns + c] = 1;
    if (i === 1) for (let c = 0; c < 30; c++) map[10 * columns + c] = 2;
    return map;
  });
  const result: ModelResult & { segmentation: SegmentationResult } = {
    model: { id: 'meshnet-brain-gwm', name: 'MeshNet', version: '1.0', manufacturer: 'x', uid: '2.25.42' },
    findings: [],
    sources: mr.map((x) => x.ref),
    provider: 'cpu',
    inferenceMs: 1,
    segmentation: {
      rows,
      columns,
      slices,
      segments: [
        { labelValue: 1, label: 'White Matter', concept: WM },
        { labelValue: 2, label: 'Grey Matter', concept: GM },
      ],
    },
  };
  const seg = buildSegmentation({
    result,
    sourceHeaders: headers,
    sopInstanceUid: '2.25.311',
    seriesInstanceUid: '2.25.312',
  })!;
  return { mr, sides, seg, rows, columns };
}

test('the SEG the gateway writes: frames mapped to their source slices, areas, the largest slice', () => {
  const { mr, sides, seg } = fixture();
  const masks = readSegMasks(seg);
  assert.deepEqual(
    masks.segments.map((s) => [s.number, s.label]),
    [
      [1, 'White Matter'],
      [2, 'Grey Matter'],
    ],
  );
  // One frame per segment per slice where it is present: 4 white matter + 1 grey matter.
  assert.equal(masks.frames.length, 5);
  for (const [i, src] of mr.entries()) {
    const wm = masks.frames.find(
      (f) => f.segmentNumber === 1 && f.sourceSopInstanceUid === src.ref.sopInstanceUid,
    );
    assert.equal(wm?.area, sides[i]! ** 2, `white matter on slice ${i}`);
    assert.equal(wm.sourceFrame, 1);
  }
  const gm = masks.frames.filter((f) => f.segmentNumber === 2);
  assert.deepEqual(
    gm.map((f) => [f.sourceSopInstanceUid, f.area]),
    [[mr[1]!.ref.sopInstanceUid, 30]],
  );
  // The mask itself, bit for bit where it was drawn.
  const k = masks.frames.indexOf(gm[0]!);
  const bits = masks.mask(k);
  assert.equal(bits[10 * masks.columns + 29], 1);
  assert.equal(bits[10 * masks.columns + 30], 0);
  assert.equal(
    bits.reduce((a, b) => a + b, 0),
    30,
  );

  const slice = representativeSlice(masks)!;
  assert.equal(slice.sopInstanceUid, mr[3]!.ref.sopInstanceUid, 'the slice with the largest area');
  assert.equal(slice.area, 50 * 50);
});

test('the overlay: the source slice in grey, the mask blended in its segment colour, at most 256 px', async () => {
  const { mr, seg, rows, columns } = fixture();
  const masks = readSegMasks(seg);
  const slice = representativeSlice(masks)!;
  const image = await decodeImage(mr[3]!.ref.file);
  const overlay = renderOverlay(image, 0, masks, slice);
  assert.deepEqual(overlay.segments, [
    { number: 1, label: 'White Matter', colour: [255, 48, 48], area: 2500 },
  ]);
  const png = decodePng(overlay.png);
  assert.equal(Math.max(png.width, png.height) <= 256, true);
  const scale = png.width / columns;
  assert.equal(png.height, Math.round(rows * scale));
  // Inside the square every pixel leans to the segment's colour; outside, every pixel is grey.
  const [r, g, b] = segmentColour(1);
  let coloured = 0;
  let grey = 0;
  for (let y = 0; y < png.height; y++)
    for (let x = 0; x < png.width; x++) {
      const p = (y * png.width + x) * 3;
      const [pr, pg, pb] = [png.rgb[p]!, png.rgb[p + 1]!, png.rgb[p + 2]!];
      const sy = y / scale;
      const sx = x / scale;
      const inside = sy >= 101 && sy < 149 && sx >= 101 && sx < 149;
      const outside = sy < 99 || sy >= 151 || sx < 99 || sx >= 151;
      if (inside) {
        // red over grey: R - G is at least alpha × (255 - 48) less rounding
        assert.ok(
          pr - pg >= OVERLAY_ALPHA * (r - g) - 2 && pr - pb >= OVERLAY_ALPHA * (r - b) - 2,
          `${x},${y}`,
        );
        coloured++;
      } else if (outside) {
        assert.ok(pr === pg && pg === pb, `grey at ${x},${y}`);
        grey++;
      }
    }
  assert.ok(coloured > 500 && grey > 10_000, `${coloured} coloured, ${grey} grey`);
});

test('a SEG from another writer (dcmqi): frames and their sources read the same way', () => {
  const masks = readSegMasks(readFileSync(DCMQI_SEG));
  assert.equal(masks.frames.length, 3);
  for (const f of masks.frames) {
    assert.match(f.sourceSopInstanceUid, /^[0-9.]+$/);
    assert.ok(masks.segments.some((s) => s.number === f.segmentNumber));
  }
  const slice = representativeSlice(masks);
  assert.ok(slice && slice.area === Math.max(...masks.frames.map((f) => f.area)) && slice.area > 0);
});

test('not a SEG, or one whose Pixel Data is short of its frames: refused with the reason', () => {
  const { seg } = fixture();
  assert.throws(() => readSegMasks(readFileSync(mrSlices(0, 1)[0]!)), /not a Segmentation/);
  // The same SEG claiming more frames than its Pixel Data holds.
  const dict = dcmjs.data.DicomMessage.readFile(
    seg.buffer.slice(seg.byteOffset, seg.byteOffset + seg.length),
  );
  const ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.dict) as Record<string, unknown>;
  ds.NumberOfFrames = 50;
  dict.dict = dcmjs.data.DicomMetaDictionary.denaturalizeDataset(ds);
  const claimed = Buffer.from(dict.write() as ArrayBuffer);
  assert.throws(() => readSegMasks(claimed), /Pixel Data has \d+ bytes, needs \d+/);
});
