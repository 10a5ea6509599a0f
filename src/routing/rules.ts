import { DEFAULT_ANATOMY_KEYWORDS } from '../config/anatomy-keywords.ts';
import type { RoutingRule } from '../config/schema.ts';
import type { CodedEntry } from '../dicom/part10.ts';
import type { InstanceRecord } from '../pipeline/study-index.ts';
import {
  canonicalBodyPart,
  resolveAnatomy,
  type AnatomyKeywordMap,
  type ResolvedAnatomy,
} from './anatomy.ts';
import { cutToVr, wildcardMatch, type MatchVr } from '../dicom/wildcard.ts';

/** The part of a model manifest that routing needs. */
export interface RoutableModel {
  id: string;
  version: string;
  accepts: {
    modality?: string[];
    bodyPart?: string[];
    sopClassUid?: string[];
    minRows?: number;
    minColumns?: number;
  };
}

export interface RoutedWork {
  modelId: string;
  modelVersion: string;
  seriesUids: string[];
  destinations: string[];
  priority: number;
  rules: string[];
}

/** Attributes a rule may match on, each with the VR whose maximum length its value is cut to. */
const ATTRIBUTE_VR = {
  Modality: 'CS',
  BodyPartExamined: 'CS',
  SOPClassUID: 'UI',
  callingAE: 'AE',
  SeriesDescription: 'LO',
  StudyDescription: 'LO',
  ProtocolName: 'LO',
} as const satisfies Record<keyof RoutingRule['match'], MatchVr>;

type MatchAttribute = keyof typeof ATTRIBUTE_VR;

/** Series-level view used for matching: the first instance's attributes stand for the series. */
export interface SeriesView {
  seriesUid: string;
  /** Trimmed and cut to each attribute's VR maximum length. */
  attrs: Partial<Record<MatchAttribute, string>>;
  anatomicRegion?: CodedEntry;
  rows?: number;
  columns?: number;
}

export interface RoutingOptions {
  /** Region → description keywords (config routing.anatomyKeywords); the built-in defaults when unset. */
  anatomyKeywords?: AnatomyKeywordMap;
}

/** One criterion that kept a model from a series: what was checked, what was seen, what was wanted. */
export interface MatchReason {
  /** The rule under which it was checked. */
  rule: string;
  /** 'models', a rule attribute (callingAE, Modality, ...), or a manifest criterion (modality, bodyPart, ...). */
  criterion: string;
  seen: string;
  expected: string;
  /** e.g. `bodyPart: "" not in [CHEST]`. */
  message: string;
}

export interface MatchExplanation {
  accepted: boolean;
  /** The rules under which the model takes the series. */
  rules: string[];
  /** The body part the decision used (the first matching rule's, when one asserted it). */
  anatomy: ResolvedAnatomy;
  /** Why each rule that did not lead to the model failed; empty when every rule led to it. */
  reasons: MatchReason[];
}

export interface SeriesPlan {
  seriesUid: string;
  /** Body Part Examined as received (cut to 16 characters). */
  bodyPartExamined?: string;
  /** The body part routing used for the series, and where it came from. */
  anatomy: ResolvedAnatomy;
  /** Per model (`id@version`). */
  models: Record<string, MatchExplanation>;
}

export interface StudyPlan {
  work: RoutedWork[];
  series: SeriesPlan[];
}

/** Rule used when the configuration has none: every model that accepts the series. */
export const IMPLICIT_RULE: RoutingRule = {
  name: 'all-accepting-models',
  match: {},
  models: ['*'],
  destinations: [],
  priority: 10,
};

const list = (patterns: string | string[]): string[] => (Array.isArray(patterns) ? patterns : [patterns]);
const show = (values: readonly string[]): string => `[${values.join(', ')}]`;
const hasWildcard = (pattern: string): boolean => pattern.includes('*') || pattern.includes('?');

function cut(value: string | undefined, attr: MatchAttribute): string | undefined {
  return value === undefined ? undefined : cutToVr(value.trim(), ATTRIBUTE_VR[attr]);
}

export function seriesViews(instances: InstanceRecord[]): SeriesView[] {
  const bySeries = new Map<string, SeriesView>();
  for (const inst of instances) {
    if (bySeries.has(inst.seriesUid)) continue;
    bySeries.set(inst.seriesUid, {
      seriesUid: inst.seriesUid,
      rows: inst.rows,
      columns: inst.columns,
      anatomicRegion: inst.anatomicRegion,
      attrs: {
        Modality: cut(inst.modality, 'Modality'),
        BodyPartExamined: cut(inst.bodyPartExamined, 'BodyPartExamined'),
        SOPClassUID: cut(inst.sopClassUid, 'SOPClassUID'),
        SeriesDescription: cut(inst.seriesDescription, 'SeriesDescription'),
        StudyDescription: cut(inst.studyDescription, 'StudyDescription'),
        ProtocolName: cut(inst.protocolName, 'ProtocolName'),
        callingAE: cut(inst.callingAe, 'callingAE'),
      },
    });
  }
  return [...bySeries.values()];
}

/** What the images themselves say about the body part (steps 1–3 of anatomy.ts). */
export function seriesAnatomy(series: SeriesView, options: RoutingOptions = {}): ResolvedAnatomy {
  return resolveAnatomy(
    {
      bodyPartExamined: series.attrs.BodyPartExamined,
      anatomicRegion: series.anatomicRegion,
      seriesDescription: series.attrs.SeriesDescription,
      protocolName: series.attrs.ProtocolName,
      studyDescription: series.attrs.StudyDescription,
    },
    options.anatomyKeywords ?? DEFAULT_ANATOMY_KEYWORDS,
  );
}

/** The images' own anatomy, or the rule's assumption when they say nothing. */
function anatomyUnder(rule: RoutingRule, evidence: ResolvedAnatomy): ResolvedAnatomy {
  const assumed = rule.assume?.bodyPart;
  if (evidence.bodyPart !== undefined || assumed === undefined) return evidence;
  return { bodyPart: canonicalBodyPart(assumed), source: 'rule-assumed', rule: rule.name };
}

/** The rule's attribute conditions that the series fails. */
function ruleFailures(rule: RoutingRule, series: SeriesView, evidence: ResolvedAnatomy): MatchReason[] {
  const reasons: MatchReason[] = [];
  for (const [attr, patterns] of Object.entries(rule.match) as [MatchAttribute, string | string[]][]) {
    if (patterns === undefined) continue;
    const wanted = list(patterns);
    const value = series.attrs[attr];
    let ok: boolean;
    let note = '';
    if (attr === 'BodyPartExamined') {
      // Matched against the value received and the body part it resolves to, so 'CHEST' takes THORAX.
      const resolved = evidence.bodyPart;
      const candidates = [value, resolved].filter((v): v is string => v !== undefined);
      ok = wanted.some(
        (p) =>
          candidates.some((c) => wildcardMatch(p, c)) ||
          (resolved !== undefined && !hasWildcard(p) && canonicalBodyPart(p) === resolved),
      );
      if (resolved !== undefined && resolved !== value) note = ` (resolved: ${resolved})`;
    } else {
      ok = value !== undefined && wanted.some((p) => wildcardMatch(p, value));
    }
    if (!ok) {
      reasons.push({
        rule: rule.name,
        criterion: attr,
        seen: value ?? '',
        expected: show(wanted),
        message: `${attr}: "${value ?? ''}"${note} does not match ${show(wanted)}`,
      });
    }
  }
  return reasons;
}

/** The manifest's criteria that the series fails, with the body part the rule gives it. */
function acceptFailures(
  model: RoutableModel,
  series: SeriesView,
  anatomy: ResolvedAnatomy,
  rule: string,
): MatchReason[] {
  const a = model.accepts;
  const reasons: MatchReason[] = [];
  const notIn = (criterion: string, seen: string, expected: string[]) =>
    reasons.push({
      rule,
      criterion,
      seen,
      expected: show(expected),
      message: `${criterion}: "${seen}" not in ${show(expected)}`,
    });
  const modality = series.attrs.Modality;
  if (a.modality?.length && !(modality !== undefined && a.modality.some((p) => wildcardMatch(p, modality))))
    notIn('modality', modality ?? '', a.modality);
  if (a.bodyPart?.length) {
    const bodyPart = anatomy.bodyPart;
    if (bodyPart === undefined || !a.bodyPart.some((term) => canonicalBodyPart(term) === bodyPart))
      notIn('bodyPart', bodyPart ?? '', a.bodyPart);
  }
  const sopClass = series.attrs.SOPClassUID;
  if (
    a.sopClassUid?.length &&
    !(sopClass !== undefined && a.sopClassUid.some((p) => wildcardMatch(p, sopClass)))
  )
    notIn('sopClassUid', sopClass ?? '', a.sopClassUid);
  for (const [criterion, min, seen] of [
    ['rows', a.minRows, series.rows],
    ['columns', a.minColumns, series.columns],
  ] as const) {
    if (min && (seen ?? 0) < min) {
      reasons.push({
        rule,
        criterion,
        seen: seen === undefined ? '' : String(seen),
        expected: `>= ${min}`,
        message: `${criterion}: ${seen ?? 'absent'} < ${min}`,
      });
    }
  }
  return reasons;
}

/**
 * Whether `model` takes `series` under `rules` (none: the implicit every-model rule), and if not, which
 * criterion failed under each rule with the value seen. routeStudy decides with this very function.
 */
export function explainMatch(
  series: SeriesView,
  model: RoutableModel,
  rules: RoutingRule[],
  options: RoutingOptions = {},
): MatchExplanation {
  const { taking, ...rest } = evaluate(series, model, rules, seriesAnatomy(series, options));
  return { ...rest, rules: taking.map((r) => r.name) };
}

/** explainMatch, with the taking rules themselves (rule names need not be unique). */
function evaluate(
  series: SeriesView,
  model: RoutableModel,
  rules: RoutingRule[],
  evidence: ResolvedAnatomy,
): Omit<MatchExplanation, 'rules'> & { taking: RoutingRule[] } {
  const effectiveRules = rules.length > 0 ? rules : [IMPLICIT_RULE];
  const taking: RoutingRule[] = [];
  const reasons: MatchReason[] = [];
  let anatomy: ResolvedAnatomy | undefined;
  for (const rule of effectiveRules) {
    if (!rule.models.includes('*') && !rule.models.includes(model.id)) {
      reasons.push({
        rule: rule.name,
        criterion: 'models',
        seen: model.id,
        expected: show(rule.models),
        message: `models: "${model.id}" not in ${show(rule.models)}`,
      });
      continue;
    }
    const unmatched = ruleFailures(rule, series, evidence);
    if (unmatched.length > 0) {
      reasons.push(...unmatched);
      continue;
    }
    const underRule = anatomyUnder(rule, evidence);
    anatomy ??= underRule;
    const rejected = acceptFailures(model, series, underRule, rule.name);
    if (rejected.length > 0) reasons.push(...rejected);
    else taking.push(rule);
  }
  return { accepted: taking.length > 0, taking, anatomy: anatomy ?? evidence, reasons };
}

/**
 * Applies the rules to a study: each (model, series) pair that a rule selects and the model accepts becomes
 * part of one unit of work per model; each series keeps the body part routing used and why each model did
 * or did not take it. Pure, so it is unit-tested without Redis.
 */
export function planStudy(
  instances: InstanceRecord[],
  models: RoutableModel[],
  rules: RoutingRule[],
  defaultDestination: string,
  options: RoutingOptions = {},
): StudyPlan {
  const effectiveRules = rules.length > 0 ? rules : [IMPLICIT_RULE];
  const work = new Map<string, RoutedWork>();
  const plans: SeriesPlan[] = [];
  for (const series of seriesViews(instances)) {
    const evidence = seriesAnatomy(series, options);
    const outcomes = models.map((m) => evaluate(series, m, effectiveRules, evidence));
    for (const rule of effectiveRules) {
      for (const [i, model] of models.entries()) {
        if (!outcomes[i]!.taking.includes(rule)) continue;
        const key = `${model.id}@${model.version}`;
        const entry = work.get(key) ?? {
          modelId: model.id,
          modelVersion: model.version,
          seriesUids: [],
          destinations: [],
          priority: rule.priority,
          rules: [],
        };
        if (!entry.seriesUids.includes(series.seriesUid)) entry.seriesUids.push(series.seriesUid);
        const destinations = rule.destinations.length > 0 ? rule.destinations : [defaultDestination];
        for (const d of destinations) if (!entry.destinations.includes(d)) entry.destinations.push(d);
        if (!entry.rules.includes(rule.name)) entry.rules.push(rule.name);
        entry.priority = Math.min(entry.priority, rule.priority);
        work.set(key, entry);
      }
    }
    // The series' body part: the one a taking model used under the earliest rule, else the images' own.
    const firstTaking = effectiveRules.find((rule) => outcomes.some((o) => o.taking.includes(rule)));
    plans.push({
      seriesUid: series.seriesUid,
      bodyPartExamined: series.attrs.BodyPartExamined,
      anatomy: firstTaking ? anatomyUnder(firstTaking, evidence) : evidence,
      models: Object.fromEntries(
        models.map((m, i) => {
          const { taking, ...rest } = outcomes[i]!;
          return [`${m.id}@${m.version}`, { ...rest, rules: taking.map((r) => r.name) }];
        }),
      ),
    });
  }
  return { work: [...work.values()], series: plans };
}

/** The units of work of planStudy. */
export function routeStudy(
  instances: InstanceRecord[],
  models: RoutableModel[],
  rules: RoutingRule[],
  defaultDestination: string,
  options: RoutingOptions = {},
): RoutedWork[] {
  return planStudy(instances, models, rules, defaultDestination, options).work;
}

/** Unused by rules that do not match on body part (ruleFailures reads it only for BodyPartExamined). */
const NO_ANATOMY: ResolvedAnatomy = { source: 'none' };

/**
 * The priority a study gets at ingest, from one of its instances: the most urgent of the rules whose
 * attribute conditions the instance meets (whatever the models then decide), or undefined when every
 * rule has the same priority, so that nothing is worked out per instance. Routing still decides the
 * priority of the work itself (planStudy); this only lets a STAT study's routing job overtake routine
 * ones at the study-complete queue.
 */
export function ingestPriority(
  rules: RoutingRule[],
  options: RoutingOptions = {},
): ((inst: InstanceRecord) => number) | undefined {
  const effective = rules.length > 0 ? rules : [IMPLICIT_RULE];
  const distinct = new Set(effective.map((r) => r.priority));
  if (distinct.size <= 1) return undefined;
  const ordered = [...effective].sort((a, b) => a.priority - b.priority);
  const lowest = ordered[ordered.length - 1]!.priority;
  return (inst) => {
    const series = seriesViews([inst])[0]!;
    let evidence: ResolvedAnatomy | undefined;
    for (const rule of ordered) {
      if (rule.priority === lowest) break;
      // Anatomy is resolved only for a rule that matches on body part (the keyword scan is the cost).
      if (rule.match.BodyPartExamined !== undefined) evidence ??= seriesAnatomy(series, options);
      if (ruleFailures(rule, series, evidence ?? NO_ANATOMY).length === 0) return rule.priority;
    }
    return lowest;
  };
}
