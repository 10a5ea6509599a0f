import type { RoutingRule } from '../config/schema.ts';
import type { InstanceRecord } from '../pipeline/study-index.ts';

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

/** Series-level view used for matching: the first instance's attributes stand for the series. */
interface SeriesView {
  seriesUid: string;
  attrs: Record<string, string | undefined>;
  rows?: number;
  columns?: number;
}

/** Rule used when the configuration has none: every model that accepts the series. */
export const IMPLICIT_RULE: RoutingRule = {
  name: 'all-accepting-models',
  match: {},
  models: ['*'],
  destinations: [],
  priority: 10,
};

function globToRegExp(pattern: string): RegExp {
  const escaped = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${escaped}$`, 'i');
}

function matchesAny(value: string | undefined, patterns: string | string[]): boolean {
  if (value === undefined) return false;
  const list = Array.isArray(patterns) ? patterns : [patterns];
  return list.some((p) => globToRegExp(p).test(value.trim()));
}

function ruleMatches(rule: RoutingRule, series: SeriesView): boolean {
  return Object.entries(rule.match).every(
    ([attr, patterns]) => patterns === undefined || matchesAny(series.attrs[attr], patterns),
  );
}

function modelAccepts(model: RoutableModel, series: SeriesView): boolean {
  const a = model.accepts;
  if (a.modality?.length && !matchesAny(series.attrs.Modality, a.modality)) return false;
  if (a.bodyPart?.length && !matchesAny(series.attrs.BodyPartExamined, a.bodyPart)) return false;
  if (a.sopClassUid?.length && !matchesAny(series.attrs.SOPClassUID, a.sopClassUid)) return false;
  if (a.minRows && (series.rows ?? 0) < a.minRows) return false;
  if (a.minColumns && (series.columns ?? 0) < a.minColumns) return false;
  return true;
}

function seriesViews(instances: InstanceRecord[]): SeriesView[] {
  const bySeries = new Map<string, SeriesView>();
  for (const inst of instances) {
    if (bySeries.has(inst.seriesUid)) continue;
    bySeries.set(inst.seriesUid, {
      seriesUid: inst.seriesUid,
      rows: inst.rows,
      columns: inst.columns,
      attrs: {
        Modality: inst.modality,
        BodyPartExamined: inst.bodyPartExamined,
        SOPClassUID: inst.sopClassUid,
        SeriesDescription: inst.seriesDescription,
        StudyDescription: inst.studyDescription,
        callingAE: inst.callingAe,
      },
    });
  }
  return [...bySeries.values()];
}

/**
 * Applies the rules to a study: each (model, series) pair that a rule selects and the model accepts becomes
 * part of one unit of work per model. Pure, so it is unit-tested without Redis.
 */
export function routeStudy(
  instances: InstanceRecord[],
  models: RoutableModel[],
  rules: RoutingRule[],
  defaultDestination: string,
): RoutedWork[] {
  const effectiveRules = rules.length > 0 ? rules : [IMPLICIT_RULE];
  const work = new Map<string, RoutedWork>();
  for (const series of seriesViews(instances)) {
    for (const rule of effectiveRules) {
      if (!ruleMatches(rule, series)) continue;
      const selected = models.filter((m) => rule.models.includes('*') || rule.models.includes(m.id));
      for (const model of selected) {
        if (!modelAccepts(model, series)) continue;
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
  }
  return [...work.values()];
}
