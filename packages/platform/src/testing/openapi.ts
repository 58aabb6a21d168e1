// OpenAPI-driven request generation for the whole-platform suites: the document's types, $ref resolution, valid values.
import fc from 'fast-check';

export type Schema = Record<string, unknown> & {
  type?: string;
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  enum?: unknown[];
  anyOf?: Schema[];
  pattern?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  $ref?: string;
  nullable?: boolean;
  additionalProperties?: boolean | Schema;
};
export interface Parameter {
  in: string;
  name: string;
  required?: boolean;
  schema?: Schema;
}
export interface Operation {
  parameters?: Parameter[];
  requestBody?: { required?: boolean; content?: Record<string, { schema?: Schema }> };
  responses: Record<string, { content?: Record<string, { schema?: Schema }> }>;
}
export interface OpenApiDoc {
  paths: Record<string, Record<string, Operation>>;
  components?: { schemas?: Record<string, Schema> };
}

/**
 * Values that satisfy a schema (the document's idea of a valid request). `known` are names of
 * records that exist: strings that match a pattern are often one of them, so handlers find something.
 */
export function validValue(s: Schema | undefined, known: string[] = [], depth = 0): fc.Arbitrary<unknown> {
  if (!s || depth > 5) return fc.constant({});
  if (s.enum) return fc.constantFrom(...s.enum);
  if (s['const'] !== undefined) return fc.constant(s['const']);
  if (s.anyOf) return fc.oneof(...s.anyOf.map((x) => validValue(x, known, depth + 1)));
  switch (s.type) {
    case 'string': {
      const min = s.minLength ?? 0;
      const max = Math.min(s.maxLength ?? 40, 40);
      if (s.pattern) {
        const re = new RegExp(s.pattern);
        const fits = known.filter((k) => re.test(k) && k.length >= min && k.length <= (s.maxLength ?? Infinity));
        const gen = fc.stringMatching(re).filter((x) => x.length >= min && x.length <= (s.maxLength ?? Infinity));
        return fits.length > 0 ? fc.oneof(fc.constantFrom(...fits), gen) : gen;
      }
      return fc.string({ minLength: min, maxLength: Math.max(min, max) });
    }
    case 'integer':
      return fc
        .integer({ min: Math.max(s.minimum ?? -5, -5), max: Math.min(s.maximum ?? 20, 20) })
        .filter((x) => x >= (s.minimum ?? -Infinity));
    case 'number':
      return fc.double({ noNaN: true, noDefaultInfinity: true });
    case 'boolean':
      return fc.boolean();
    case 'array': {
      const item = validValue(s.items, known, depth + 1);
      const opts = { minLength: s.minItems ?? 0, maxLength: Math.min(s.maxItems ?? 3, 3) };
      return s['uniqueItems'] ? fc.uniqueArray(item, { ...opts, selector: (x) => JSON.stringify(x) }) : fc.array(item, opts);
    }
    case 'object': {
      const props = Object.entries(s.properties ?? {});
      const min = typeof s['minProperties'] === 'number' ? s['minProperties'] : 0;
      return fc
        .record(Object.fromEntries(props.map(([k, v]) => [k, validValue(v, known, depth + 1)])), {
          requiredKeys: (s.required ?? []).filter((k) => s.properties?.[k]),
        })
        .filter((o) => Object.keys(o).length >= min);
    }
    default:
      return fc.constant(null);
  }
}

/** The document with every `$ref` to its components replaced by the schema it names. */
export function resolveRefs<T>(v: T, doc: OpenApiDoc, depth = 0): T {
  if (Array.isArray(v)) return (v as unknown[]).map((x) => resolveRefs(x, doc, depth)) as T;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if (typeof o['$ref'] === 'string' && depth < 20) {
      const name = o['$ref'].replace('#/components/schemas/', '');
      return resolveRefs(doc.components?.schemas?.[name] as T, doc, depth + 1);
    }
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, resolveRefs(x, doc, depth)])) as T;
  }
  return v;
}

/** Path parameters, query and body that the document calls valid for one operation. */
export function validRequest(
  op: Operation,
  known: string[],
): fc.Arbitrary<{ params: Record<string, unknown>; query: Record<string, unknown>; body: unknown }> {
  const of = (where: string) => (op.parameters ?? []).filter((p) => p.in === where);
  return fc.record({
    params: fc.record(Object.fromEntries(of('path').map((p) => [p.name, validValue(p.schema, known)]))),
    query: fc.record(Object.fromEntries(of('query').map((p) => [p.name, validValue(p.schema, known)])), {
      requiredKeys: of('query')
        .filter((p) => p.required)
        .map((p) => p.name),
    }),
    body: validValue(op.requestBody?.content?.['application/json']?.schema, known),
  });
}
