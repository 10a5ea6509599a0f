// Study completion from the counts the images carry (the other evidence is MPPS: pipeline/mpps.ts).
//
// A SERIES says how big it is:
//   - Number of Series Related Instances (0020,1209) = n: the series is complete once n distinct instances
//     of it are in. When present it governs the series, whatever else the instances carry.
//   - Images in Acquisition (0020,1002) = k, with Acquisition Number (0020,0012): each acquisition is complete
//     once k distinct instances of it are in (instances without an Acquisition Number form one acquisition);
//     the series is complete while every acquisition seen in it is. Only instances carrying the count are
//     counted per acquisition.
//   - An enhanced multi-frame object (ENHANCED_MULTIFRAME_SOP_CLASSES, Number of Frames > 1) with no per-series
//     count is a complete series by itself.
//   - Anything else: the series is not complete by its counts, and its study waits for the quiet period.
//
// A finished SERIES does not make a finished STUDY: nothing in an image says which series its study has. So a
// study completes from counts only when something that knows the source says so: a routing rule whose
// match.callingAE takes the study's sender (a rule with no callingAE takes every sender) and that has a
// `completeWhen`. Then, on an instance not seen before, the study completes at once when
//   (1) every series the study holds is complete by its counts, and
//   (2) each of the rule's required-series conditions (`completeWhen.series`) is matched by one of those series
//       (its first instance's attributes, wildcard globs as in routing rules), and
//   (3) the study holds at least `completeWhen.minSeries` series (default 1).
// Any one applicable rule being satisfied is enough (each `completeWhen` is a sufficient condition an admin
// wrote for a source). Without such a rule the quiet period stays, even for a lone CR image or a lone
// enhanced object: a chest CR often comes as PA and lateral in two series, an enhanced CT as a localizer and a
// volume, and completing on the first would run the model on half a study and again on the whole.
// The gateway keeps the counts per study in Redis (keys.studyCounts) and evaluates them inside the script
// that indexes the instance (study-index.ts), with no extra round trip. A study that completed early and then
// receives another instance re-opens as usual (and completes at once again if it is still whole by counts).
import type { CompleteWhen, RoutingRule, SeriesCondition } from '../config/schema.ts';
import type { InstanceHeader } from '../dicom/part10.ts';
import { cutToVr, wildcardMatch, type MatchVr } from '../dicom/wildcard.ts';

/** SOP classes of enhanced (and legacy converted enhanced) multi-frame images: one object may be a series. */
export const ENHANCED_MULTIFRAME_SOP_CLASSES: ReadonlySet<string> = new Set([
  '1.2.840.10008.5.1.4.1.1.2.1', // Enhanced CT
  '1.2.840.10008.5.1.4.1.1.2.2', // Legacy Converted Enhanced CT
  '1.2.840.10008.5.1.4.1.1.4.1', // Enhanced MR
  '1.2.840.10008.5.1.4.1.1.4.3', // Enhanced MR Color
  '1.2.840.10008.5.1.4.1.1.4.4', // Legacy Converted Enhanced MR
  '1.2.840.10008.5.1.4.1.1.128.1', // Legacy Converted Enhanced PET
  '1.2.840.10008.5.1.4.1.1.130', // Enhanced PET
  '1.2.840.10008.5.1.4.1.1.6.2', // Enhanced US Volume
  '1.2.840.10008.5.1.4.1.1.12.1.1', // Enhanced XA
  '1.2.840.10008.5.1.4.1.1.12.2.1', // Enhanced XRF
  '1.2.840.10008.5.1.4.1.1.13.1.1', // X-Ray 3D Angiographic
  '1.2.840.10008.5.1.4.1.1.13.1.3', // Breast Tomosynthesis
]);

/** What one instance says about the size of its series. */
export interface CountEvidence {
  /** Number of Series Related Instances. */
  seriesInstances?: number;
  /** Images in Acquisition, and the acquisition it counts ('' when the instance has no Acquisition Number). */
  acquisition?: { images: number; number: string };
  /** An enhanced multi-frame object with no per-series count: a whole series by itself. */
  wholeSeries: boolean;
}

export function countEvidence(h: InstanceHeader): CountEvidence {
  const seriesInstances = h.seriesRelatedInstances;
  const acquisition =
    h.imagesInAcquisition !== undefined
      ? { images: h.imagesInAcquisition, number: h.acquisitionNumber?.toString() ?? '' }
      : undefined;
  const wholeSeries =
    seriesInstances === undefined &&
    h.sopClassUid !== undefined &&
    ENHANCED_MULTIFRAME_SOP_CLASSES.has(h.sopClassUid) &&
    (h.numberOfFrames ?? 0) > 1;
  return { seriesInstances, acquisition, wholeSeries };
}

/**
 * The completion rules as the index script takes them, for one instance: `conditions` are the required-series
 * conditions its series matches ("<rule>.<condition>", comma-separated; the series keeps its first
 * instance's), `rules` the rules that apply to its sender ("<rule>:<minSeries>:<conditions>", ';'-separated).
 * Rules are numbered by their place in routing.rules.
 */
export interface CountPlan {
  conditions: string;
  rules: string;
}

export const NO_COUNT_PLAN: CountPlan = { conditions: '', rules: '' };

const CONDITION_VR = {
  Modality: 'CS',
  BodyPartExamined: 'CS',
  SOPClassUID: 'UI',
  SeriesDescription: 'LO',
  StudyDescription: 'LO',
  ProtocolName: 'LO',
} as const satisfies Record<keyof SeriesCondition, MatchVr>;

type ConditionAttribute = keyof typeof CONDITION_VR;

function attributeOf(h: InstanceHeader, attr: ConditionAttribute): string | undefined {
  switch (attr) {
    case 'Modality':
      return h.modality;
    case 'BodyPartExamined':
      return h.bodyPartExamined;
    case 'SOPClassUID':
      return h.sopClassUid;
    case 'SeriesDescription':
      return h.seriesDescription;
    case 'StudyDescription':
      return h.studyDescription;
    case 'ProtocolName':
      return h.protocolName;
  }
}

const patterns = (p: string | string[]): string[] => (Array.isArray(p) ? p : [p]);

/** Whether the instance's attributes meet every glob of the condition (absent attribute: no match). */
export function matchesCondition(h: InstanceHeader, condition: SeriesCondition): boolean {
  for (const [attr, wanted] of Object.entries(condition) as [ConditionAttribute, string | string[]][]) {
    if (wanted === undefined) continue;
    const raw = attributeOf(h, attr);
    if (raw === undefined) return false;
    const value = cutToVr(raw.trim(), CONDITION_VR[attr]);
    if (!patterns(wanted).some((p) => wildcardMatch(p, value))) return false;
  }
  return true;
}

/** The routing rules that carry a completeWhen, compiled once, asked once per stored instance. */
export class CountRules {
  private readonly rules: { index: number; callingAE?: string[]; completeWhen: CompleteWhen }[];

  constructor(rules: readonly RoutingRule[]) {
    this.rules = [];
    rules.forEach((rule, index) => {
      if (rule.completeWhen === undefined) return;
      const ae = rule.match.callingAE;
      this.rules.push({
        index,
        ...(ae !== undefined ? { callingAE: patterns(ae) } : {}),
        completeWhen: rule.completeWhen,
      });
    });
  }

  get empty(): boolean {
    return this.rules.length === 0;
  }

  /** The rules that apply to this instance's sender, and the required-series conditions it matches. */
  forInstance(inst: InstanceHeader & { callingAe: string }): CountPlan {
    if (this.rules.length === 0) return NO_COUNT_PLAN;
    const sender = cutToVr(inst.callingAe.trim(), 'AE');
    const rules: string[] = [];
    const conditions: string[] = [];
    for (const r of this.rules) {
      if (r.callingAE !== undefined && !r.callingAE.some((p) => wildcardMatch(p, sender))) continue;
      const { series, minSeries } = r.completeWhen;
      rules.push(`${r.index}:${minSeries}:${series.length}`);
      series.forEach((condition, i) => {
        if (matchesCondition(inst, condition)) conditions.push(`${r.index}.${i}`);
      });
    }
    return { conditions: conditions.join(','), rules: rules.join(';') };
  }
}
