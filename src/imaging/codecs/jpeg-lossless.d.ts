// jpeg-lossless-decoder-js 2.1.2 names a declaration file it does not ship; this is the surface we use.
declare module 'jpeg-lossless-decoder-js' {
  export class Decoder {
    /** Decodes one JPEG lossless (process 14) image; samples in platform byte order. */
    decode(
      buffer: ArrayBuffer,
      offset?: number,
      length?: number,
      numBytes?: number,
    ): Uint8Array | Uint16Array;
  }
}
