import { readFile, writeFile } from 'node:fs/promises';
import dcmjs from 'dcmjs';
import dcmjsCodecs from 'dcmjs-codecs';
import {
  cutCodestream,
  encodePixelDataElements,
  type OffsetTableChoice,
} from '../../src/imaging/encapsulation.ts';

// Multi-frame encapsulated fixtures derived from the real samples: a sample's code streams (read with
// dcmjs, not with the splitter under test) re-encapsulated as N frames in M fragments, with the offset
// table asked for. The data set is written by dcmjs; the Pixel Data elements by encapsulation.ts.

export interface CodestreamSource {
  transferSyntaxUid: string;
  /** Naturalized data set without Pixel Data. */
  dataset: Record<string, unknown>;
  /** One code stream per frame. */
  frames: Uint8Array[];
}

/** A sample's code streams as dcmjs reads them (one per frame: the samples have one fragment per frame or one frame). */
export async function codestreamsOf(file: string): Promise<CodestreamSource> {
  const bytes = await readFile(file);
  const message = dcmjs.data.DicomMessage.readFile(
    bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
  );
  const meta = dcmjs.data.DicomMetaDictionary.naturalizeDataset(message.meta);
  const dataset = dcmjs.data.DicomMetaDictionary.naturalizeDataset(message.dict);
  const parts = (dataset.PixelData as ArrayBuffer[]).map((p) => new Uint8Array(p));
  const frames = Number(dataset.NumberOfFrames ?? 1);
  delete dataset.PixelData;
  return {
    transferSyntaxUid: String(meta.TransferSyntaxUID).replace(/[\0 ]+$/, ''),
    dataset,
    frames: frames === 1 ? [concat(parts)] : checkedFrames(parts, frames, file),
  };
}

/** The frames of an uncompressed sample encoded by dcmjs-codecs (an independent encoder) into `syntax`. */
export async function encodedWith(file: string, syntax: string): Promise<CodestreamSource> {
  const bytes = await readFile(file);
  await ensureCodecs();
  const transcoder = new dcmjsCodecs.Transcoder(
    bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer,
  );
  transcoder.transcode(syntax, syntax.endsWith('.81') ? { allowedLossyError: 2 } : {});
  const dataset = { ...transcoder.getElements() } as Record<string, unknown>;
  const parts = (dataset.PixelData as ArrayBuffer[]).map((p) => new Uint8Array(p));
  delete dataset.PixelData;
  delete dataset._vrMap;
  return {
    transferSyntaxUid: syntax,
    dataset,
    frames: checkedFrames(parts, Number(dataset.NumberOfFrames ?? 1), file),
  };
}

async function ensureCodecs(): Promise<void> {
  if (!dcmjsCodecs.NativeCodecs.isInitialized()) await dcmjsCodecs.NativeCodecs.initializeAsync();
}

export interface FragmentedOptions {
  /** Fragments per frame: one count for all, or one per frame. */
  fragments: number | number[];
  table: OffsetTableChoice;
  /** Varies the cut points. */
  seed?: number;
  /** Overrides written into the data set (e.g. absurd Rows). */
  attributes?: Record<string, unknown>;
}

/** Writes `source`'s frames as a Part-10 file: each frame cut into uneven even-length fragments. */
export async function writeFragmented(
  file: string,
  source: CodestreamSource,
  options: FragmentedOptions,
): Promise<void> {
  const frames = source.frames.map((codestream, i) =>
    cutCodestream(
      codestream,
      typeof options.fragments === 'number' ? options.fragments : options.fragments[i]!,
      (options.seed ?? 1) * 7919 + i,
    ),
  );
  await writePart10(file, source, frames, options.table, options.attributes);
}

/** Writes a Part-10 file with the given fragments per frame (no cutting). */
export async function writePart10(
  file: string,
  source: CodestreamSource,
  framesAsFragments: Uint8Array[][],
  table: OffsetTableChoice,
  attributes: Record<string, unknown> = {},
): Promise<void> {
  const { DicomDict, DicomMetaDictionary } = dcmjs.data;
  const dataset: Record<string, unknown> = { ...source.dataset };
  // Nothing may follow the Pixel Data appended below; offset tables are written with it.
  for (const key of ['ExtendedOffsetTable', 'ExtendedOffsetTableLengths', 'DataSetTrailingPadding'])
    delete dataset[key];
  Object.assign(dataset, { NumberOfFrames: framesAsFragments.length, ...attributes });
  const sopClass = String(dataset.SOPClassUID ?? '1.2.840.10008.5.1.4.1.1.7');
  const meta = {
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: sopClass,
    MediaStorageSOPInstanceUID: String(dataset.SOPInstanceUID ?? '2.25.1'),
    TransferSyntaxUID: source.transferSyntaxUid,
    ImplementationClassUID: '2.25.2',
  };
  const dict = new DicomDict(DicomMetaDictionary.denaturalizeDataset(meta));
  dict.dict = DicomMetaDictionary.denaturalizeDataset(dataset);
  const head = new Uint8Array(dict.write());
  const pixels = encodePixelDataElements(framesAsFragments, table);
  await writeFile(file, Buffer.concat([head, pixels]));
}

function checkedFrames(parts: Uint8Array[], frames: number, file: string): Uint8Array[] {
  if (parts.length !== frames) throw new Error(`${file}: ${parts.length} fragments for ${frames} frames`);
  return parts;
}

function concat(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}
