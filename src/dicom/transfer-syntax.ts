// The one transfer-syntax table: for each syntax, whether ingest accepts it (stored exactly as received,
// never transcoded) and how the imaging library reads its pixel data. Ingest negotiation and the decoder
// both read this table, and a test checks that everything ingest accepts can be decoded.

/** How the imaging library reads a syntax's pixel data. */
export type PixelDecoder =
  /** dcmjs reads native little-endian pixels (deflated data sets are inflated first). */
  | 'native'
  /** dcmjs-codecs (WebAssembly) transcodes to explicit VR little endian. */
  | 'codec'
  /** jpeg-lossless-decoder-js: JPEG lossless process 14, any predictor (dcmjs-codecs lacks it). */
  | 'jpeg-lossless'
  /** src/imaging/codecs/jpeg-extended.ts: 8 or 12-bit greyscale JPEG extended (no package decodes it). */
  | 'jpeg-extended';

export interface TransferSyntax {
  uid: string;
  name: string;
  /** Accepted by C-STORE negotiation and STOW-RS, and stored as received. */
  ingest: boolean;
  decoder: PixelDecoder;
}

export const IMPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2';
export const EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1';
export const DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1.99';
export const EXPLICIT_VR_BIG_ENDIAN = '1.2.840.10008.1.2.2';

export const TRANSFER_SYNTAXES: readonly TransferSyntax[] = [
  { uid: IMPLICIT_VR_LITTLE_ENDIAN, name: 'Implicit VR Little Endian', ingest: true, decoder: 'native' },
  { uid: EXPLICIT_VR_LITTLE_ENDIAN, name: 'Explicit VR Little Endian', ingest: true, decoder: 'native' },
  // Retired, still sent by old modalities; dcmjs-codecs swaps it.
  { uid: EXPLICIT_VR_BIG_ENDIAN, name: 'Explicit VR Big Endian', ingest: true, decoder: 'codec' },
  {
    uid: DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    name: 'Deflated Explicit VR Little Endian',
    ingest: true,
    decoder: 'native',
  },
  { uid: '1.2.840.10008.1.2.4.50', name: 'JPEG Baseline (Process 1)', ingest: true, decoder: 'codec' },
  {
    uid: '1.2.840.10008.1.2.4.51',
    name: 'JPEG Extended (Process 2 & 4)',
    ingest: true,
    decoder: 'jpeg-extended',
  },
  {
    uid: '1.2.840.10008.1.2.4.57',
    name: 'JPEG Lossless, Non-Hierarchical (Process 14)',
    ingest: true,
    decoder: 'jpeg-lossless',
  },
  { uid: '1.2.840.10008.1.2.4.70', name: 'JPEG Lossless SV1', ingest: true, decoder: 'codec' },
  { uid: '1.2.840.10008.1.2.4.80', name: 'JPEG-LS Lossless', ingest: true, decoder: 'codec' },
  { uid: '1.2.840.10008.1.2.4.81', name: 'JPEG-LS Near-Lossless', ingest: true, decoder: 'codec' },
  { uid: '1.2.840.10008.1.2.4.90', name: 'JPEG 2000 Lossless', ingest: true, decoder: 'codec' },
  { uid: '1.2.840.10008.1.2.4.91', name: 'JPEG 2000', ingest: true, decoder: 'codec' },
  { uid: '1.2.840.10008.1.2.5', name: 'RLE Lossless', ingest: true, decoder: 'codec' },
  // dcmjs-codecs lists these, but no sample here exercises them: decoded when they arrive in a file,
  // not offered in negotiation until a test proves them (docs/conformance.md).
  { uid: '1.2.840.10008.1.2.4.110', name: 'JPEG XL Lossless', ingest: false, decoder: 'codec' },
  { uid: '1.2.840.10008.1.2.4.112', name: 'JPEG XL', ingest: false, decoder: 'codec' },
  { uid: '1.2.840.10008.1.2.4.201', name: 'HTJ2K Lossless', ingest: false, decoder: 'codec' },
  { uid: '1.2.840.10008.1.2.4.202', name: 'HTJ2K Lossless RPCL', ingest: false, decoder: 'codec' },
  { uid: '1.2.840.10008.1.2.4.203', name: 'HTJ2K', ingest: false, decoder: 'codec' },
];

const BY_UID = new Map(TRANSFER_SYNTAXES.map((t) => [t.uid, t]));

export function transferSyntax(uid: string): TransferSyntax | undefined {
  return BY_UID.get(uid);
}

/** Syntaxes ingest accepts and stores as received. */
export const INGEST_TRANSFER_SYNTAXES: ReadonlySet<string> = new Set(
  TRANSFER_SYNTAXES.filter((t) => t.ingest).map((t) => t.uid),
);

/** How the pixel data of a syntax is read, or undefined when the imaging library cannot read it. */
export function pixelDecoderFor(uid: string): PixelDecoder | undefined {
  return BY_UID.get(uid)?.decoder;
}
