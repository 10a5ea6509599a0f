// Per-frame attributes of a naturalized (dcmjs) data set. Enhanced multi-frame objects (PS3.3 C.7.6.16)
// keep a frame's geometry, rescale and window in functional groups: the frame's own item of the
// Per-Frame Functional Groups Sequence first, then the Shared Functional Groups Sequence. Classic
// single-frame images keep them at the top level. Shared by the pixel decoder (volumes) and the SEG
// builder (which must place each frame of its label map where the source frame lies).

/** A naturalized data set (dcmjs keywords → values). */
export type Dataset = Record<string, unknown>;

/** Image Plane attributes (PS3.3 C.7.6.2), in DICOM patient coordinates (LPS, mm). */
export interface SliceGeometry {
  /** Image Position (Patient): centre of the first transmitted pixel. */
  position: [number, number, number];
  /** Image Orientation (Patient): row direction cosines, then column direction cosines. */
  orientation: [number, number, number, number, number, number];
  /** Pixel Spacing: between rows, then between columns. */
  pixelSpacing: [number, number];
}

/**
 * `attribute` for frame `frame` (0-based): inside functional group `sequence`, per-frame first, then
 * shared; else the top-level attribute, which applies to every frame of a classic image.
 */
export function frameGroupValue(ds: Dataset, frame: number, sequence: string, attribute: string): unknown {
  return groupValue(ds, frame, sequence, attribute) ?? ds[attribute];
}

function groupValue(ds: Dataset, frame: number, sequence: string, attribute: string): unknown {
  const perFrame = Array.isArray(ds.PerFrameFunctionalGroupsSequence)
    ? (ds.PerFrameFunctionalGroupsSequence[frame] as Dataset | undefined)
    : undefined;
  const shared = Array.isArray(ds.SharedFunctionalGroupsSequence)
    ? (ds.SharedFunctionalGroupsSequence[0] as Dataset | undefined)
    : undefined;
  for (const group of [perFrame, shared]) {
    const item = first(group?.[sequence]) as Dataset | undefined;
    if (item && item[attribute] !== undefined) return item[attribute];
  }
  return undefined;
}

/**
 * Where frame `frame` (0-based) lies, when the data set gives all three attributes as finite numbers.
 * A top-level Image Position says where frame 1 lies, not the others: later frames need their own.
 */
export function frameGeometry(ds: Dataset, frame: number): SliceGeometry | undefined {
  const position = numbers(
    frame === 0
      ? frameGroupValue(ds, 0, 'PlanePositionSequence', 'ImagePositionPatient')
      : groupValue(ds, frame, 'PlanePositionSequence', 'ImagePositionPatient'),
    3,
  );
  const orientation = numbers(
    frameGroupValue(ds, frame, 'PlaneOrientationSequence', 'ImageOrientationPatient'),
    6,
  );
  const spacing = numbers(frameGroupValue(ds, frame, 'PixelMeasuresSequence', 'PixelSpacing'), 2);
  if (!position || !orientation || !spacing || spacing.some((v) => v <= 0)) return undefined;
  return {
    position: position as SliceGeometry['position'],
    orientation: orientation as SliceGeometry['orientation'],
    pixelSpacing: spacing as SliceGeometry['pixelSpacing'],
  };
}

function numbers(value: unknown, n: number): number[] | undefined {
  const list = (Array.isArray(value) ? value : [value]).map(toNumber);
  return list.length === n && list.every((v) => v !== undefined) ? (list as number[]) : undefined;
}

/** A value as a finite number (numbers, or numeric strings as dcmjs gives DS/IS), else undefined. */
export function toNumber(value: unknown): number | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  const n = typeof value === 'number' ? value : Number(String(value).trim());
  return Number.isFinite(n) ? n : undefined;
}

/** The first value of a multi-valued attribute (dcmjs gives arrays), or the value itself. */
export function first(value: unknown): unknown {
  return Array.isArray(value) ? value[0] : value;
}
