/** Building ObjectRefs: the keys dependencies between model objects are recorded with. */
import type { ObjectRef, RefKind } from './model.js';
import { qualify, quoteIdent } from './quote.js';

/** A schema or extension, named by its own name. */
export function unqualifiedRef(kind: 'schema' | 'extension', name: string): ObjectRef {
  return `${kind}:${quoteIdent(name)}`;
}

/** An object named within a schema: type, sequence, table, view, index, statistics. */
export function qualifiedRef(
  kind: Exclude<RefKind, 'schema' | 'extension' | 'function'>,
  schema: string,
  name: string,
): ObjectRef {
  return `${kind}:${qualify(schema, name)}`;
}

/** A function or procedure: its name and argument types (the way overloads differ). */
export function functionRef(schema: string, name: string, signature: string): ObjectRef {
  return `function:${qualify(schema, name)}(${signature})`;
}

/** An object named within a table: constraint, trigger, rule, policy. */
export function tableObjectRef(
  kind: 'constraint' | 'trigger' | 'rule' | 'policy',
  schema: string,
  table: string,
  name: string,
): ObjectRef {
  return `${kind}:${qualify(schema, table)}.${quoteIdent(name)}`;
}

/** The kind part of a ref. */
export function refKind(ref: ObjectRef): RefKind {
  return ref.slice(0, ref.indexOf(':')) as RefKind;
}
