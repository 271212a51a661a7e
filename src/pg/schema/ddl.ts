/**
 * DDL generation from a SchemaModel.
 *
 * Every object becomes one or more nodes: a creating node, and satellites
 * for its comment, owner, privileges, sequence value or refresh. Nodes carry
 * dependencies (the model's pg_depend edges plus the structural ones: an
 * index needs its table, a grant needs its owner), and are sorted
 * topologically, ties broken by a fixed order of kinds (schemas, extensions,
 * types, functions, sequences, tables, ... as pg_dump orders them).
 *
 * Pre-data holds the object kinds rows are loaded into and whatever they
 * need (a function used by a default, a view used by a column type); all
 * else is post-data, so that indexes, constraints, triggers and row security
 * are created after the data, as a restore wants. Sequence values and
 * materialized-view refreshes come last.
 *
 * The statements expect to be run in order on one session. The first of
 * each section turns check_function_bodies off, as pg_dump does: a function
 * body may mention tables that are created later.
 */

import { inheritsKeepsOrder } from './inheritance.js';
import type {
  AclEntry,
  AggregateModel,
  CollationModel,
  ColumnModel,
  ConstraintModel,
  DdlStatement,
  FunctionModel,
  InitialPrivilegesChange,
  ObjectRef,
  SchemaModel,
  SequenceModel,
  TableModel,
  TextSearchConfigurationModel,
  TextSearchDictionaryModel,
  TypeModel,
  ViewModel,
} from './model.js';
import { qualify, quoteIdent, quoteLiteral } from './quote.js';
import { functionRef, qualifiedRef, tableObjectRef, unqualifiedRef } from './refs.js';

/** Options for `generateDdl`. */
export interface GenerateDdlOptions {
  /**
   * `schema.name` keys of the tables to generate (for `restore --table`):
   * those tables, the partitions of any partitioned one among them, and
   * what they need (their schema, types, functions, sequences; their
   * constraints, indexes, triggers, policies). A selected partition's
   * ancestors are selected too (without their other partitions), so it is
   * attached as it was. A foreign key is generated only when its referenced
   * table is selected too.
   * Default: everything.
   */
  readonly tables?: ReadonlySet<string>;
  /** ALTER ... OWNER TO the recorded owners (default true). */
  readonly includeOwnership?: boolean;
  /** GRANT/REVOKE the recorded privileges (default true). */
  readonly includeGrants?: boolean;
}

/** Statements to run before loading rows, and after. */
export interface GeneratedDdl {
  preData: DdlStatement[];
  postData: DdlStatement[];
}

/** Phase of a node: before the data, after it, or at the very end. */
const Phase = { Pre: 0, Post: 1, Final: 2 } as const;
type Phase = (typeof Phase)[keyof typeof Phase];

/** Order of kinds among nodes that are ready at the same time. */
const PRIORITY = {
  setting: 0,
  schema: 1,
  extension: 2,
  collation: 3,
  type: 3,
  function: 4,
  sequence: 5,
  table: 6,
  partition: 7,
  ownedBy: 8,
  view: 9,
  constraint: 23,
  checkNotValid: 24,
  index: 25,
  indexAttach: 26,
  replicaIdentity: 27,
  foreignKey: 28,
  trigger: 29,
  rule: 30,
  rowSecurity: 31,
  policy: 32,
  statistics: 33,
  comment: 40,
  owner: 41,
  grant: 42,
  sequenceValue: 43,
  refresh: 44,
} as const;

/**
 * Privileges of the object kinds that have more than one (before PostgreSQL
 * 17, which adds MAINTAIN on tables).
 */
const ALL_PRIVILEGES: Readonly<Record<string, readonly string[]>> = {
  TABLE: ['DELETE', 'INSERT', 'REFERENCES', 'SELECT', 'TRIGGER', 'TRUNCATE', 'UPDATE'],
  SEQUENCE: ['SELECT', 'UPDATE', 'USAGE'],
  SCHEMA: ['CREATE', 'USAGE'],
};

interface Node {
  id: string;
  phase: Phase;
  priority: number;
  deps: string[];
  statements: DdlStatement[];
  /** Creation order: the last tie-breaker, so output is deterministic. */
  seq: number;
  /** The node this one is a satellite of (comment, owner, grants...): generated with it. */
  satelliteOf?: string;
  /** The table (`schema.name`) this node belongs to, for the `tables` option. */
  table?: string;
  /** Tables that must be selected too for this node to be generated. */
  needsTables?: string[];
}

/** Generates the DDL that recreates `model` in an empty database. */
export function generateDdl(model: SchemaModel, options: GenerateDdlOptions = {}): GeneratedDdl {
  const builder = new Builder(model, {
    ownership: options.includeOwnership ?? true,
    grants: options.includeGrants ?? true,
  });
  builder.build();
  const nodes = options.tables === undefined ? builder.nodes : builder.select(options.tables);
  return order(nodes);
}

/**
 * Statements giving the database named `name` the snapshot's database
 * properties (DatabaseModel): owner (with ownership), connection limit,
 * comment, privileges (with grants), then its settings, last because one
 * such as default_transaction_read_only would stop the restore's own
 * writes. Run after the restore into a database it created. Empty for a
 * snapshot that did not record them.
 */
export function databaseDdl(
  model: SchemaModel,
  name: string,
  options: Pick<GenerateDdlOptions, 'includeOwnership' | 'includeGrants'> = {},
): DdlStatement[] {
  const db = model.database;
  if (db === undefined) return [];
  const include = {
    ownership: options.includeOwnership ?? true,
    grants: options.includeGrants ?? true,
  };
  const q = quoteIdent(name);
  const out: DdlStatement[] = [];
  if (include.ownership)
    out.push(stmt('owner', q, `ALTER DATABASE ${q} OWNER TO ${quoteIdent(db.owner)}`));
  if (db.connectionLimit !== -1)
    out.push(stmt('database', q, `ALTER DATABASE ${q} CONNECTION LIMIT ${db.connectionLimit}`));
  if (db.comment !== undefined)
    out.push(stmt('comment', q, `COMMENT ON DATABASE ${q} IS ${quoteLiteral(db.comment)}`));
  if (include.grants && db.acl !== null) {
    const target: Target = { keyword: 'DATABASE', grantKeyword: 'DATABASE', name: q };
    out.push(...new Builder(model, include).grantStatements(target, db.owner, db.acl, ''));
  }
  for (const setting of db.settings) {
    out.push(stmt('setting', q, `ALTER DATABASE ${q} SET ${settingSql(setting)}`));
  }
  return out;
}

/**
 * Settings whose stored value is already a list of quoted items (GUC_LIST_QUOTE
 * in PostgreSQL): written as stored; any other value is one literal.
 */
const LIST_SETTINGS = new Set([
  'search_path',
  'temp_tablespaces',
  'local_preload_libraries',
  'session_preload_libraries',
  'shared_preload_libraries',
  'unix_socket_directories',
]);

/** `name=value` as stored in pg_db_role_setting, as the tail of ALTER DATABASE ... SET. */
function settingSql(setting: string): string {
  const eq = setting.indexOf('=');
  const name = setting.slice(0, eq);
  const value = setting.slice(eq + 1);
  const ident = /^[A-Za-z_][A-Za-z0-9_.]*$/.test(name) ? name : quoteIdent(name);
  // (A list set to nothing is stored as "" or as nothing: written as '', an
  // empty string; "" alone is a zero-length identifier, refused.)
  const list = LIST_SETTINGS.has(name.toLowerCase());
  return `${ident} = ${list ? (value === '' || value === '""' ? "''" : value) : quoteLiteral(value)}`;
}

/** Key of a table for the `tables` option. */
function tableKey(schema: string, name: string): string {
  return `${schema}.${name}`;
}

function stmt(kind: string, name: string, sql: string): DdlStatement {
  return { kind, name, sql };
}

/** A storage parameter `name=value` as SQL, quoting the value unless it is a plain word or number. */
function option(text: string): string {
  const eq = text.indexOf('=');
  if (eq < 0) return text;
  const name = text.slice(0, eq);
  const value = text.slice(eq + 1);
  return /^[A-Za-z0-9_.+-]+$/.test(value) ? `${name}=${value}` : `${name}=${quoteLiteral(value)}`;
}

function withOptions(options: readonly string[]): string {
  return options.length === 0 ? '' : ` WITH (${options.map(option).join(', ')})`;
}

/** A deparsed statement without its trailing semicolon (pg_get_viewdef, pg_get_ruledef add one). */
function trimSemicolon(sql: string): string {
  return sql.trimEnd().replace(/;$/, '');
}

/** How a grantable or commentable object is named in GRANT, COMMENT and ALTER ... OWNER. */
interface Target {
  /** e.g. TABLE, SEQUENCE, FUNCTION, SCHEMA, TYPE, DOMAIN, VIEW, MATERIALIZED VIEW. */
  keyword: string;
  /** The keyword GRANT uses (TABLE for views, TYPE for domains...). */
  grantKeyword: string;
  name: string;
  /** The name GRANT uses when it differs (an ordered-set aggregate's argument types). */
  grantName?: string;
}

class Builder {
  readonly nodes: Node[] = [];
  private readonly byId = new Map<string, Node>();
  private readonly tables = new Map<string, TableModel>();
  private readonly identitySequences = new Map<string, SequenceModel>();
  private readonly matviews = new Set<ObjectRef>();
  /** Table of each index (plain or a constraint's), by `schema.name` of the index. */
  private readonly indexTables = new Map<string, string>();

  constructor(
    private readonly model: SchemaModel,
    private readonly include: { ownership: boolean; grants: boolean },
  ) {
    for (const t of model.tables) this.tables.set(tableKey(t.schema, t.name), t);
    for (const s of model.sequences) {
      if (s.identityOf !== undefined) {
        const { schema, table, column } = s.identityOf;
        this.identitySequences.set(`${tableKey(schema, table)}.${column}`, s);
      }
    }
    for (const v of model.views) {
      if (v.kind === 'materialized') this.matviews.add(qualifiedRef('view', v.schema, v.name));
    }
    for (const i of model.indexes) this.indexTables.set(tableKey(i.schema, i.name), i.table);
    for (const c of model.constraints) {
      if (c.type !== 'foreign-key') this.indexTables.set(tableKey(c.schema, c.name), c.table);
    }
  }

  private add(node: Omit<Node, 'seq'>): Node {
    const full: Node = { ...node, seq: this.nodes.length };
    if (this.byId.has(full.id)) throw new Error(`duplicate DDL node ${full.id}`);
    this.nodes.push(full);
    this.byId.set(full.id, full);
    return full;
  }

  build(): void {
    for (const phase of [Phase.Pre, Phase.Post]) {
      this.add({
        id: `setting|${phase}`,
        phase,
        priority: PRIORITY.setting,
        deps: [],
        statements: [stmt('setting', 'check_function_bodies', 'SET check_function_bodies = false')],
      });
    }
    for (const s of this.model.schemas) this.schema(s);
    for (const e of this.model.extensions) {
      const ref = unqualifiedRef('extension', e.name);
      this.add({
        id: ref,
        phase: Phase.Pre,
        priority: PRIORITY.extension,
        deps: e.dependsOn,
        statements: [
          stmt(
            'extension',
            e.name,
            `CREATE EXTENSION IF NOT EXISTS ${quoteIdent(e.name)} WITH SCHEMA ${quoteIdent(e.schema)}`,
          ),
        ],
      });
      if (e.comment !== undefined) {
        this.comment(
          ref,
          { keyword: 'EXTENSION', grantKeyword: '', name: quoteIdent(e.name) },
          e.comment,
        );
      }
    }
    for (const c of this.model.collations) this.collation(c);
    for (const d of this.model.textSearchDictionaries ?? []) this.textSearchDictionary(d);
    for (const c of this.model.textSearchConfigurations ?? []) this.textSearchConfiguration(c);
    for (const t of this.model.types) this.type(t);
    for (const f of this.model.functions) this.function(f);
    for (const a of this.model.aggregates) this.aggregate(a);
    for (const s of this.model.sequences) this.sequence(s);
    for (const t of this.model.tables) this.table(t);
    for (const v of this.model.views) this.view(v);
    for (const c of this.model.constraints) this.constraint(c);
    for (const i of this.model.indexes) this.index(i);
    for (const t of this.model.triggers) this.trigger(t);
    for (const r of this.model.rules) this.rule(r);
    for (const p of this.model.policies) this.policy(p);
    for (const s of this.model.statistics) this.statisticsObject(s);
    if (this.include.grants)
      for (const c of this.model.initialPrivilegesChanged ?? []) this.initialPrivileges(c);
    // Dependencies on objects that are not generated (unsupported kinds) are dropped here.
    for (const n of this.nodes) n.deps = n.deps.filter((d) => this.byId.has(d) && d !== n.id);
  }

  /** The nodes for the `tables` option: the selected tables' nodes and everything they need. */
  select(keys: ReadonlySet<string>): Node[] {
    const selected = new Set<string>();
    for (const key of keys) {
      if (!this.tables.has(key)) throw new Error(`table ${key} is not in the schema model`);
      selected.add(key);
    }
    // Partitions of a selected partitioned table hold its rows: they come with it.
    let grew = true;
    while (grew) {
      grew = false;
      for (const t of this.model.tables) {
        const key = tableKey(t.schema, t.name);
        const parent = t.partitionOf;
        if (
          parent !== undefined &&
          selected.has(tableKey(parent.schema, parent.name)) &&
          !selected.has(key)
        ) {
          selected.add(key);
          grew = true;
        }
      }
    }
    // A selected partition is attached to its parent: its ancestors are selected too (with
    // their indexes, constraints and triggers, which partitions inherit), not their other partitions.
    for (const key of [...selected]) {
      for (let t = this.tables.get(key); t?.partitionOf !== undefined; ) {
        const parentKey = tableKey(t.partitionOf.schema, t.partitionOf.name);
        selected.add(parentKey);
        t = this.tables.get(parentKey);
      }
    }
    const satellites = new Map<string, Node[]>();
    for (const n of this.nodes) {
      if (n.satelliteOf === undefined) continue;
      const list = satellites.get(n.satelliteOf) ?? [];
      list.push(n);
      satellites.set(n.satelliteOf, list);
    }
    const included = new Set<string>();
    const queue: Node[] = [];
    const push = (n: Node | undefined) => {
      if (n === undefined || included.has(n.id)) return;
      if (n.needsTables?.some((t) => !selected.has(t))) return;
      included.add(n.id);
      queue.push(n);
    };
    push(this.byId.get(`setting|${Phase.Pre}`));
    push(this.byId.get(`setting|${Phase.Post}`));
    // Satellites come with their object (a foreign key's comment only with the foreign key).
    for (const n of this.nodes) {
      if (n.table !== undefined && n.satelliteOf === undefined && selected.has(n.table)) push(n);
    }
    while (queue.length > 0) {
      const n = queue.pop()!;
      for (const d of n.deps) push(this.byId.get(d));
      for (const s of satellites.get(n.id) ?? []) push(s);
    }
    return this.nodes
      .filter((n) => included.has(n.id))
      .map((n) => ({ ...n, deps: n.deps.filter((d) => included.has(d)) }));
  }

  // --- satellites: comments, owners, grants ---------------------------------

  private comment(of: string, target: Target, text: string, table?: string): void {
    this.commentStatements(
      of,
      [
        stmt(
          'comment',
          target.name,
          `COMMENT ON ${target.keyword} ${target.name} IS ${quoteLiteral(text)}`,
        ),
      ],
      table,
    );
  }

  /** Comments on object `of`; `main` is the node that creates it (a table for its identity sequence). */
  private commentStatements(
    of: string,
    statements: DdlStatement[],
    table?: string,
    main = of,
  ): void {
    if (statements.length === 0) return;
    const node: Omit<Node, 'seq'> = {
      id: `comment|${of}`,
      phase: Phase.Post,
      priority: PRIORITY.comment,
      deps: [main],
      statements,
      satelliteOf: main,
    };
    if (table !== undefined) node.table = table;
    this.add(node);
  }

  private ownerAndGrants(
    of: string,
    target: Target,
    owner: string,
    acl: AclEntry[] | null,
    table?: string,
    columnGrants: DdlStatement[] = [],
  ): void {
    const deps = [of];
    if (this.include.ownership) {
      const id = `owner|${of}`;
      const node: Omit<Node, 'seq'> = {
        id,
        phase: Phase.Post,
        priority: PRIORITY.owner,
        deps: [of],
        statements: [
          stmt(
            'owner',
            target.name,
            `ALTER ${target.keyword} ${target.name} OWNER TO ${quoteIdent(owner)}`,
          ),
        ],
        satelliteOf: of,
      };
      if (table !== undefined) node.table = table;
      this.add(node);
      deps.push(id);
    }
    if (!this.include.grants) return;
    const statements = [
      ...(acl === null ? [] : this.grantStatements(target, owner, acl, '')),
      ...columnGrants,
    ];
    if (statements.length === 0) return;
    const node: Omit<Node, 'seq'> = {
      id: `grant|${of}`,
      phase: Phase.Post,
      priority: PRIORITY.grant,
      deps,
      statements,
      satelliteOf: of,
    };
    if (table !== undefined) node.table = table;
    this.add(node);
  }

  /**
   * GRANTs reproducing `acl` exactly: first the implicit defaults are
   * revoked (from PUBLIC and from the owner), then every entry is granted,
   * by its grantor when that is not the owner. `columns` is ` (col)` for
   * column privileges, which have no defaults to revoke.
   */
  grantStatements(target: Target, owner: string, acl: AclEntry[], columns: string): DdlStatement[] {
    const on = `ON ${target.grantKeyword} ${target.grantName ?? target.name}`;
    const out: DdlStatement[] = [];
    // Without ownership, whoever restores owns what it creates, with the owner's default
    // privileges; what the recorded owner granted itself is left alone.
    const withOwner = this.include.ownership;
    if (columns === '') {
      out.push(stmt('grant', target.name, `REVOKE ALL ${on} FROM PUBLIC`));
      if (withOwner)
        out.push(stmt('grant', target.name, `REVOKE ALL ${on} FROM ${quoteIdent(owner)}`));
    }
    const entries = [...acl]
      .filter((e) => withOwner || e.grantee !== owner)
      .sort((a, b) => Number(a.grantor !== owner) - Number(b.grantor !== owner));
    for (const e of entries) {
      const grantee = e.grantee === null ? 'PUBLIC' : quoteIdent(e.grantee);
      const byOther = e.grantor !== owner;
      if (byOther) out.push(stmt('grant', target.name, `SET ROLE ${quoteIdent(e.grantor)}`));
      const plain = e.privileges.filter((p) => !e.grantable.includes(p));
      const list = (ps: string[]) =>
        columns === '' && this.isAll(target.grantKeyword, ps)
          ? 'ALL'
          : ps.map((p) => `${p}${columns}`).join(', ');
      if (plain.length > 0) {
        out.push(stmt('grant', target.name, `GRANT ${list(plain)} ${on} TO ${grantee}`));
      }
      if (e.grantable.length > 0) {
        out.push(
          stmt(
            'grant',
            target.name,
            `GRANT ${list(e.grantable)} ${on} TO ${grantee} WITH GRANT OPTION`,
          ),
        );
      }
      if (byOther) out.push(stmt('grant', target.name, 'RESET ROLE'));
    }
    return out;
  }

  /**
   * Whether `privileges` are all an object of this kind has on the source's
   * version: then GRANT ALL, so that restoring on a newer version (which may
   * know more privileges, such as MAINTAIN from 17) grants all there too.
   */
  private isAll(keyword: string, privileges: readonly string[]): boolean {
    const all = ALL_PRIVILEGES[keyword];
    if (all === undefined) return false;
    const expected = [...all];
    if (keyword === 'TABLE' && this.model.serverVersionNum >= 170000) expected.push('MAINTAIN');
    return expected.length === privileges.length && expected.every((p) => privileges.includes(p));
  }

  // --- objects -------------------------------------------------------------

  /** Grants and revokes on a built-in or extension object, after the extension is created. */
  private initialPrivileges(c: InitialPrivilegesChange): void {
    const on = `ON ${c.kind} ${c.name}`;
    const who = (g: string | null) => (g === null ? 'PUBLIC' : quoteIdent(g));
    this.add({
      id: `initial-grant|${c.kind} ${c.name}`,
      phase: Phase.Post,
      priority: PRIORITY.grant,
      deps: c.extension === undefined ? [] : [unqualifiedRef('extension', c.extension)],
      statements: [
        ...c.revokes.map((r) =>
          stmt('grant', c.name, `REVOKE ${r.privilege} ${on} FROM ${who(r.grantee)}`),
        ),
        ...c.grants.map((g) =>
          stmt(
            'grant',
            c.name,
            `GRANT ${g.privilege} ${on} TO ${who(g.grantee)}${g.grantable === true ? ' WITH GRANT OPTION' : ''}`,
          ),
        ),
      ],
    });
  }

  private schema(s: SchemaModel['schemas'][number]): void {
    const ref = unqualifiedRef('schema', s.name);
    const target: Target = { keyword: 'SCHEMA', grantKeyword: 'SCHEMA', name: quoteIdent(s.name) };
    this.add({
      id: ref,
      phase: Phase.Pre,
      priority: PRIORITY.schema,
      deps: s.dependsOn,
      // public (and any schema the target already has) is kept, with what it already holds.
      statements: [stmt('schema', s.name, `CREATE SCHEMA IF NOT EXISTS ${target.name}`)],
    });
    if (s.comment !== undefined) this.comment(ref, target, s.comment);
    this.ownerAndGrants(ref, target, s.owner, s.acl);
  }

  private collation(c: CollationModel): void {
    const ref = qualifiedRef('collation', c.schema, c.name);
    const name = qualify(c.schema, c.name);
    const parts = [`provider = ${c.provider}`];
    if (c.lcCollate !== undefined) parts.push(`lc_collate = ${quoteLiteral(c.lcCollate)}`);
    if (c.lcCtype !== undefined) parts.push(`lc_ctype = ${quoteLiteral(c.lcCtype)}`);
    if (c.locale !== undefined) parts.push(`locale = ${quoteLiteral(c.locale)}`);
    if (c.rules !== undefined) parts.push(`rules = ${quoteLiteral(c.rules)}`);
    if (!c.deterministic) parts.push('deterministic = false');
    this.add({
      id: ref,
      phase: Phase.Pre,
      priority: PRIORITY.collation,
      deps: c.dependsOn,
      statements: [stmt('collation', name, `CREATE COLLATION ${name} (${parts.join(', ')})`)],
    });
    const target: Target = { keyword: 'COLLATION', grantKeyword: '', name };
    if (c.comment !== undefined) this.comment(ref, target, c.comment);
    this.ownerAndGrants(ref, target, c.owner, null);
  }

  private textSearchDictionary(d: TextSearchDictionaryModel): void {
    const ref = qualifiedRef('tsdictionary', d.schema, d.name);
    const name = qualify(d.schema, d.name);
    const options = d.options === undefined ? '' : `, ${d.options}`;
    this.add({
      id: ref,
      phase: Phase.Pre,
      priority: PRIORITY.collation,
      deps: d.dependsOn,
      statements: [
        stmt(
          'text search dictionary',
          name,
          `CREATE TEXT SEARCH DICTIONARY ${name} (TEMPLATE = ${d.template}${options})`,
        ),
      ],
    });
    const target: Target = { keyword: 'TEXT SEARCH DICTIONARY', grantKeyword: '', name };
    if (d.comment !== undefined) this.comment(ref, target, d.comment);
    this.ownerAndGrants(ref, target, d.owner, null);
  }

  private textSearchConfiguration(c: TextSearchConfigurationModel): void {
    const ref = qualifiedRef('tsconfig', c.schema, c.name);
    const name = qualify(c.schema, c.name);
    this.add({
      id: ref,
      phase: Phase.Pre,
      priority: PRIORITY.collation,
      deps: c.dependsOn,
      statements: [
        stmt(
          'text search configuration',
          name,
          `CREATE TEXT SEARCH CONFIGURATION ${name} (PARSER = ${c.parser})`,
        ),
        ...c.mappings.map((m) =>
          stmt(
            'text search configuration',
            name,
            `ALTER TEXT SEARCH CONFIGURATION ${name} ADD MAPPING FOR ${quoteIdent(m.token)} WITH ${m.dictionaries.join(', ')}`,
          ),
        ),
      ],
    });
    const target: Target = { keyword: 'TEXT SEARCH CONFIGURATION', grantKeyword: '', name };
    if (c.comment !== undefined) this.comment(ref, target, c.comment);
    this.ownerAndGrants(ref, target, c.owner, null);
  }

  private type(t: TypeModel): void {
    const ref = qualifiedRef('type', t.schema, t.name);
    const name = qualify(t.schema, t.name);
    const keyword = t.kind === 'domain' ? 'DOMAIN' : 'TYPE';
    const target: Target = { keyword, grantKeyword: keyword, name };
    const statements: DdlStatement[] = [];
    const comments: DdlStatement[] = [];
    const post: DdlStatement[] = [];
    switch (t.kind) {
      case 'enum':
        statements.push(
          stmt(
            'type',
            name,
            `CREATE TYPE ${name} AS ENUM (${t.labels.map(quoteLiteral).join(', ')})`,
          ),
        );
        break;
      case 'composite': {
        const attrs = t.attributes.map(
          (a) =>
            `${quoteIdent(a.name)} ${a.type}${a.collation === undefined ? '' : ` COLLATE ${a.collation}`}`,
        );
        statements.push(stmt('type', name, `CREATE TYPE ${name} AS (${attrs.join(', ')})`));
        for (const a of t.attributes) {
          if (a.comment === undefined) continue;
          const col = `${name}.${quoteIdent(a.name)}`;
          comments.push(
            stmt('comment', col, `COMMENT ON COLUMN ${col} IS ${quoteLiteral(a.comment)}`),
          );
        }
        break;
      }
      case 'range': {
        const parts = [`SUBTYPE = ${t.subtype}`];
        if (t.subtypeOpclass !== undefined) parts.push(`SUBTYPE_OPCLASS = ${t.subtypeOpclass}`);
        if (t.collation !== undefined) parts.push(`COLLATION = ${t.collation}`);
        if (t.canonical !== undefined) parts.push(`CANONICAL = ${t.canonical}`);
        if (t.subtypeDiff !== undefined) parts.push(`SUBTYPE_DIFF = ${t.subtypeDiff}`);
        parts.push(`MULTIRANGE_TYPE_NAME = ${qualify(t.multirangeSchema, t.multirangeName)}`);
        statements.push(stmt('type', name, `CREATE TYPE ${name} AS RANGE (${parts.join(', ')})`));
        break;
      }
      case 'domain': {
        let sql = `CREATE DOMAIN ${name} AS ${t.baseType}`;
        if (t.collation !== undefined) sql += ` COLLATE ${t.collation}`;
        if (t.default !== undefined) sql += ` DEFAULT ${t.default}`;
        const namedNotNull = t.constraints.some((c) => c.definition.startsWith('NOT NULL'));
        if (t.notNull && !namedNotNull) sql += ' NOT NULL';
        for (const c of t.constraints) {
          const clause = `CONSTRAINT ${quoteIdent(c.name)} ${c.definition}`;
          // A NOT VALID constraint is added after the data, which it need not hold for.
          if (c.validated) sql += ` ${clause}`;
          else post.push(stmt('constraint', name, `ALTER DOMAIN ${name} ADD ${clause}`));
          if (c.comment !== undefined) {
            const on = `CONSTRAINT ${quoteIdent(c.name)} ON DOMAIN ${name}`;
            comments.push(stmt('comment', name, `COMMENT ON ${on} IS ${quoteLiteral(c.comment)}`));
          }
        }
        statements.push(stmt('domain', name, sql));
        break;
      }
    }
    this.add({ id: ref, phase: Phase.Pre, priority: PRIORITY.type, deps: t.dependsOn, statements });
    if (post.length > 0) {
      this.add({
        id: `notvalid|${ref}`,
        phase: Phase.Post,
        priority: PRIORITY.checkNotValid,
        deps: [ref],
        statements: post,
        satelliteOf: ref,
      });
    }
    if (t.comment !== undefined) {
      comments.unshift(
        stmt('comment', name, `COMMENT ON ${keyword} ${name} IS ${quoteLiteral(t.comment)}`),
      );
    }
    this.commentStatements(ref, comments);
    this.ownerAndGrants(ref, target, t.owner, t.acl);
  }

  private function(f: FunctionModel): void {
    const ref = functionRef(f.schema, f.name, f.signature);
    const keyword = f.kind === 'procedure' ? 'PROCEDURE' : 'FUNCTION';
    const name = `${qualify(f.schema, f.name)}(${f.identityArguments})`;
    const target: Target = { keyword, grantKeyword: keyword, name };
    this.add({
      id: ref,
      // Post unless something before the data needs it (then `order` moves it).
      phase: Phase.Post,
      priority: PRIORITY.function,
      deps: f.dependsOn,
      statements: [stmt('function', name, f.definition)],
    });
    if (f.comment !== undefined) this.comment(ref, target, f.comment);
    this.ownerAndGrants(ref, target, f.owner, f.acl);
  }

  private aggregate(a: AggregateModel): void {
    const ref = functionRef(a.schema, a.name, a.signature);
    const name = qualify(a.schema, a.name);
    const o: string[] = [`SFUNC = ${a.sfunc}`, `STYPE = ${a.stype}`];
    if (a.sspace !== undefined) o.push(`SSPACE = ${a.sspace}`);
    if (a.finalfunc !== undefined) {
      o.push(`FINALFUNC = ${a.finalfunc}`);
      if (a.finalfuncExtra) o.push('FINALFUNC_EXTRA');
      o.push(`FINALFUNC_MODIFY = ${a.finalfuncModify}`);
    }
    if (a.combinefunc !== undefined) o.push(`COMBINEFUNC = ${a.combinefunc}`);
    if (a.serialfunc !== undefined) o.push(`SERIALFUNC = ${a.serialfunc}`);
    if (a.deserialfunc !== undefined) o.push(`DESERIALFUNC = ${a.deserialfunc}`);
    if (a.initcond !== undefined) o.push(`INITCOND = ${quoteLiteral(a.initcond)}`);
    if (a.msfunc !== undefined) o.push(`MSFUNC = ${a.msfunc}`);
    if (a.minvfunc !== undefined) o.push(`MINVFUNC = ${a.minvfunc}`);
    if (a.mstype !== undefined) o.push(`MSTYPE = ${a.mstype}`);
    if (a.msspace !== undefined) o.push(`MSSPACE = ${a.msspace}`);
    if (a.mfinalfunc !== undefined) {
      o.push(`MFINALFUNC = ${a.mfinalfunc}`);
      if (a.mfinalfuncExtra) o.push('MFINALFUNC_EXTRA');
      o.push(`MFINALFUNC_MODIFY = ${a.mfinalfuncModify}`);
    }
    if (a.minitcond !== undefined) o.push(`MINITCOND = ${quoteLiteral(a.minitcond)}`);
    if (a.sortop !== undefined) o.push(`SORTOP = OPERATOR(${a.sortop})`);
    o.push(`PARALLEL = ${a.parallel}`);
    if (a.kind === 'hypothetical') o.push('HYPOTHETICAL');
    const sql = `CREATE AGGREGATE ${name}(${a.arguments}) (\n    ${o.join(',\n    ')}\n)`;
    this.add({
      id: ref,
      phase: Phase.Post,
      priority: PRIORITY.function,
      deps: a.dependsOn,
      statements: [stmt('aggregate', `${name}(${a.identityArguments})`, sql)],
    });
    const target: Target = {
      keyword: 'AGGREGATE',
      grantKeyword: 'FUNCTION',
      name: `${name}(${a.identityArguments})`,
      grantName: `${name}(${a.signature})`,
    };
    if (a.comment !== undefined) this.comment(ref, target, a.comment);
    this.ownerAndGrants(ref, target, a.owner, a.acl);
  }

  private sequenceTarget(s: SequenceModel): Target {
    return { keyword: 'SEQUENCE', grantKeyword: 'SEQUENCE', name: qualify(s.schema, s.name) };
  }

  /** START, INCREMENT, MIN, MAX, CACHE, CYCLE: shared by CREATE SEQUENCE and identity columns. */
  private sequenceOptions(s: SequenceModel): string {
    return [
      `START WITH ${s.start}`,
      `INCREMENT BY ${s.increment}`,
      `MINVALUE ${s.min}`,
      `MAXVALUE ${s.max}`,
      `CACHE ${s.cache}`,
      s.cycle ? 'CYCLE' : 'NO CYCLE',
    ].join(' ');
  }

  private sequence(s: SequenceModel): void {
    const ref = qualifiedRef('sequence', s.schema, s.name);
    const target = this.sequenceTarget(s);
    const identity = s.identityOf;
    // An identity sequence is created by its table: its other nodes hang off the table.
    const main =
      identity === undefined ? ref : qualifiedRef('table', identity.schema, identity.table);
    const link = identity ?? s.ownedBy;
    const table = link === undefined ? undefined : tableKey(link.schema, link.table);
    if (identity === undefined) {
      this.add({
        id: ref,
        phase: Phase.Pre,
        priority: PRIORITY.sequence,
        deps: s.dependsOn,
        statements: [
          stmt(
            'sequence',
            target.name,
            `CREATE ${s.unlogged ? 'UNLOGGED ' : ''}SEQUENCE ${target.name} AS ${s.dataType} ${this.sequenceOptions(s)}`,
          ),
        ],
      });
    }
    if (s.ownedBy !== undefined) {
      const tableRef = qualifiedRef('table', s.ownedBy.schema, s.ownedBy.table);
      const col = `${qualify(s.ownedBy.schema, s.ownedBy.table)}.${quoteIdent(s.ownedBy.column)}`;
      const node: Omit<Node, 'seq'> = {
        id: `ownedby|${ref}`,
        phase: Phase.Pre,
        priority: PRIORITY.ownedBy,
        deps: [ref, tableRef],
        statements: [
          stmt('sequence-owned-by', target.name, `ALTER SEQUENCE ${target.name} OWNED BY ${col}`),
        ],
      };
      if (table !== undefined) node.table = table;
      this.add(node);
    }
    const value: Omit<Node, 'seq'> = {
      id: `setval|${ref}`,
      phase: Phase.Final,
      priority: PRIORITY.sequenceValue,
      deps: [main],
      statements: [
        stmt(
          'sequence-value',
          target.name,
          `SELECT pg_catalog.setval(${quoteLiteral(target.name)}, ${s.lastValue}, ${s.isCalled})`,
        ),
      ],
      satelliteOf: main,
    };
    if (table !== undefined) value.table = table;
    this.add(value);
    if (s.comment !== undefined) {
      this.commentStatements(
        ref,
        [
          stmt(
            'comment',
            target.name,
            `COMMENT ON SEQUENCE ${target.name} IS ${quoteLiteral(s.comment)}`,
          ),
        ],
        table,
        main,
      );
    }
    if (link === undefined) {
      this.ownerAndGrants(ref, target, s.owner, s.acl);
    } else if (s.acl !== null && this.include.grants) {
      // A sequence linked to a table changes owner with it (ALTER TABLE ... OWNER).
      const tableRef = qualifiedRef('table', link.schema, link.table);
      const deps = [tableRef];
      if (this.include.ownership) deps.push(`owner|${tableRef}`);
      const node: Omit<Node, 'seq'> = {
        id: `grant|${ref}`,
        phase: Phase.Post,
        priority: PRIORITY.grant,
        deps: identity === undefined ? [...deps, ref] : deps,
        statements: this.grantStatements(target, s.owner, s.acl, ''),
        satelliteOf: main,
      };
      if (table !== undefined) node.table = table;
      this.add(node);
    }
  }

  private columnDefinition(t: TableModel, c: ColumnModel, parentIdentity: boolean): string {
    let sql = `${quoteIdent(c.name)} ${c.type}`;
    if (c.collation !== undefined) sql += ` COLLATE ${c.collation}`;
    if (c.generated !== undefined) {
      sql += ` GENERATED ALWAYS AS (${c.generated}) ${c.generatedKind === 'virtual' ? 'VIRTUAL' : 'STORED'}`;
    }
    // A partition takes an identity column from its parent when attached (PostgreSQL 17+).
    if (c.identity !== undefined && !parentIdentity) {
      sql += ` GENERATED ${c.identity === 'always' ? 'ALWAYS' : 'BY DEFAULT'} AS IDENTITY`;
      const seq = this.identitySequences.get(`${tableKey(t.schema, t.name)}.${c.name}`);
      if (seq !== undefined) {
        sql += ` (SEQUENCE NAME ${qualify(seq.schema, seq.name)} ${this.sequenceOptions(seq)})`;
      }
    }
    if (c.default !== undefined) sql += ` DEFAULT ${c.default}`;
    const nn = c.notNullConstraint;
    if (nn !== undefined) {
      if (nn.validated) {
        sql += ` CONSTRAINT ${quoteIdent(nn.name)} NOT NULL${nn.noInherit ? ' NO INHERIT' : ''}`;
      }
    } else if (c.notNull) {
      sql += ' NOT NULL';
    }
    return sql;
  }

  private table(t: TableModel): void {
    const ref = qualifiedRef('table', t.schema, t.name);
    const key = tableKey(t.schema, t.name);
    const name = qualify(t.schema, t.name);
    const viaInherits =
      t.inherits.length > 0 &&
      inheritsKeepsOrder(t, (schema, table) => this.tables.get(tableKey(schema, table)));
    const parent =
      t.partitionOf === undefined
        ? undefined
        : this.tables.get(tableKey(t.partitionOf.schema, t.partitionOf.name));
    const elements: string[] = [];
    const after: DdlStatement[] = [];
    const post: DdlStatement[] = [];
    const only = t.kind === 'partitioned' ? '' : 'ONLY ';
    for (const c of t.columns) {
      const col = quoteIdent(c.name);
      if (viaInherits && c.inheritedOnly === true) {
        // Inherited: only what differs from the parent is set afterwards.
        const from = this.inheritedColumn(t, c.name);
        if (c.default !== undefined && c.default !== from?.default) {
          after.push(
            stmt(
              'table',
              name,
              `ALTER TABLE ONLY ${name} ALTER COLUMN ${col} SET DEFAULT ${c.default}`,
            ),
          );
        }
        if (c.notNull && from?.notNull !== true) {
          after.push(
            stmt('table', name, `ALTER TABLE ONLY ${name} ALTER COLUMN ${col} SET NOT NULL`),
          );
        }
      } else {
        const parentIdentity =
          parent?.columns.some((p) => p.name === c.name && p.identity !== undefined) === true &&
          !this.identitySequences.has(`${key}.${c.name}`);
        elements.push(this.columnDefinition(t, c, parentIdentity));
      }
      const alter = `ALTER TABLE ONLY ${name} ALTER COLUMN ${col}`;
      if (c.statistics !== undefined)
        after.push(stmt('table', name, `${alter} SET STATISTICS ${c.statistics}`));
      if (c.storage !== undefined)
        after.push(stmt('table', name, `${alter} SET STORAGE ${c.storage.toUpperCase()}`));
      if (c.compression !== undefined)
        after.push(stmt('table', name, `${alter} SET COMPRESSION ${c.compression}`));
      if (c.options !== undefined) {
        after.push(stmt('table', name, `${alter} SET (${c.options.map(option).join(', ')})`));
      }
      const nn = c.notNullConstraint;
      if (nn !== undefined && !nn.validated) {
        post.push(
          stmt(
            'constraint',
            name,
            `ALTER TABLE ${only}${name} ADD CONSTRAINT ${quoteIdent(nn.name)} NOT NULL ${col} NOT VALID`,
          ),
        );
      }
    }
    for (const c of t.checks) {
      if (viaInherits && !c.local) continue;
      const inline = c.validated || c.definition.endsWith('NOT ENFORCED');
      const clause = `CONSTRAINT ${quoteIdent(c.name)} ${c.definition}`;
      if (inline) elements.push(clause);
      else post.push(stmt('constraint', name, `ALTER TABLE ${only}${name} ADD ${clause}`));
    }
    let sql = `CREATE ${t.unlogged ? 'UNLOGGED ' : ''}TABLE ${name} (${elements.length === 0 ? '' : `\n    ${elements.join(',\n    ')}\n`})`;
    const parents = t.inherits.map((p) => qualify(p.schema, p.name));
    if (viaInherits) sql += ` INHERITS (${parents.join(', ')})`;
    if (t.partitionKey !== undefined) sql += ` PARTITION BY ${t.partitionKey}`;
    sql += withOptions(t.options);
    if (!viaInherits) {
      for (const p of parents)
        after.push(stmt('table', name, `ALTER TABLE ONLY ${name} INHERIT ${p}`));
    }
    // Identity sequences follow their table's persistence on creation; a later change is replayed.
    for (const c of t.columns) {
      const seq = this.identitySequences.get(`${key}.${c.name}`);
      if (seq !== undefined && seq.unlogged !== t.unlogged) {
        after.push(
          stmt(
            'sequence',
            qualify(seq.schema, seq.name),
            `ALTER SEQUENCE ${qualify(seq.schema, seq.name)} SET ${seq.unlogged ? 'UNLOGGED' : 'LOGGED'}`,
          ),
        );
      }
    }
    const deps = [
      ...t.dependsOn,
      ...t.inherits.map((p) => qualifiedRef('table', p.schema, p.name)),
    ];
    this.add({
      id: ref,
      phase: Phase.Pre,
      priority: PRIORITY.table,
      deps,
      statements: [stmt('table', name, sql), ...after],
      table: key,
    });
    if (t.partitionOf !== undefined) {
      const parentRef = qualifiedRef('table', t.partitionOf.schema, t.partitionOf.name);
      const parentName = qualify(t.partitionOf.schema, t.partitionOf.name);
      this.add({
        id: `attach|${ref}`,
        phase: Phase.Pre,
        priority: PRIORITY.partition,
        deps: [ref, parentRef],
        statements: [
          stmt(
            'partition',
            name,
            `ALTER TABLE ONLY ${parentName} ATTACH PARTITION ${name} ${t.partitionOf.bound}`,
          ),
        ],
        table: key,
      });
    }
    if (post.length > 0) {
      this.add({
        id: `notvalid|${ref}`,
        phase: Phase.Post,
        priority: PRIORITY.checkNotValid,
        deps: [ref],
        statements: post,
        table: key,
      });
    }
    if (t.replicaIdentity !== 'default') {
      const how =
        t.replicaIdentity === 'index'
          ? `USING INDEX ${quoteIdent(t.replicaIdentityIndex ?? '')}`
          : t.replicaIdentity.toUpperCase();
      const deps = [ref];
      if (t.replicaIdentityIndex !== undefined) {
        deps.push(
          qualifiedRef('index', t.schema, t.replicaIdentityIndex),
          tableObjectRef('constraint', t.schema, t.name, t.replicaIdentityIndex),
        );
      }
      this.add({
        id: `replident|${ref}`,
        phase: Phase.Post,
        priority: PRIORITY.replicaIdentity,
        deps,
        statements: [
          stmt('replica-identity', name, `ALTER TABLE ONLY ${name} REPLICA IDENTITY ${how}`),
        ],
        table: key,
      });
    }
    if (t.rowSecurity || t.forceRowSecurity) {
      const statements: DdlStatement[] = [];
      if (t.rowSecurity)
        statements.push(
          stmt('row-security', name, `ALTER TABLE ${name} ENABLE ROW LEVEL SECURITY`),
        );
      if (t.forceRowSecurity)
        statements.push(stmt('row-security', name, `ALTER TABLE ${name} FORCE ROW LEVEL SECURITY`));
      this.add({
        id: `rls|${ref}`,
        phase: Phase.Post,
        priority: PRIORITY.rowSecurity,
        deps: [ref],
        statements,
        table: key,
      });
    }
    const target: Target = { keyword: 'TABLE', grantKeyword: 'TABLE', name };
    const comments: DdlStatement[] = [];
    if (t.comment !== undefined)
      comments.push(
        stmt('comment', name, `COMMENT ON TABLE ${name} IS ${quoteLiteral(t.comment)}`),
      );
    const columnGrants: DdlStatement[] = [];
    for (const c of t.columns) {
      const col = `${name}.${quoteIdent(c.name)}`;
      if (c.comment !== undefined)
        comments.push(
          stmt('comment', col, `COMMENT ON COLUMN ${col} IS ${quoteLiteral(c.comment)}`),
        );
      const nn = c.notNullConstraint;
      if (nn?.comment !== undefined) {
        const on = `CONSTRAINT ${quoteIdent(nn.name)} ON ${name}`;
        comments.push(stmt('comment', name, `COMMENT ON ${on} IS ${quoteLiteral(nn.comment)}`));
      }
      if (c.acl !== undefined)
        columnGrants.push(
          ...this.grantStatements(target, t.owner, c.acl, ` (${quoteIdent(c.name)})`),
        );
    }
    for (const c of t.checks) {
      if (c.comment === undefined) continue;
      const on = `CONSTRAINT ${quoteIdent(c.name)} ON ${name}`;
      comments.push(stmt('comment', name, `COMMENT ON ${on} IS ${quoteLiteral(c.comment)}`));
    }
    this.commentStatements(ref, comments, key);
    this.ownerAndGrants(ref, target, t.owner, t.acl, key, columnGrants);
  }

  /** The column `name` as the first parent that has it defines it. */
  private inheritedColumn(t: TableModel, name: string): ColumnModel | undefined {
    for (const p of t.inherits) {
      const c = this.tables.get(tableKey(p.schema, p.name))?.columns.find((x) => x.name === name);
      if (c !== undefined) return c;
    }
    return undefined;
  }

  private view(v: ViewModel): void {
    const ref = qualifiedRef('view', v.schema, v.name);
    const name = qualify(v.schema, v.name);
    const materialized = v.kind === 'materialized';
    const keyword = materialized ? 'MATERIALIZED VIEW' : 'VIEW';
    const body = trimSemicolon(v.definition);
    const statements = [
      stmt(
        materialized ? 'materialized-view' : 'view',
        name,
        `CREATE ${keyword} ${name}${withOptions(v.options)} AS\n${body}${materialized ? '\n WITH NO DATA' : ''}`,
      ),
    ];
    for (const c of v.columns) {
      if (c.default !== undefined) {
        statements.push(
          stmt(
            'view',
            name,
            `ALTER VIEW ${name} ALTER COLUMN ${quoteIdent(c.name)} SET DEFAULT ${c.default}`,
          ),
        );
      }
    }
    this.add({
      id: ref,
      phase: Phase.Post,
      priority: PRIORITY.view,
      deps: v.dependsOn,
      statements,
    });
    if (materialized && v.populated) {
      // A materialized view over another one is refreshed after it.
      const deps = [
        ref,
        ...v.dependsOn.filter((d) => this.matviews.has(d)).map((d) => `refresh|${d}`),
      ];
      this.add({
        id: `refresh|${ref}`,
        phase: Phase.Final,
        priority: PRIORITY.refresh,
        deps,
        statements: [stmt('refresh', name, `REFRESH MATERIALIZED VIEW ${name}`)],
        satelliteOf: ref,
      });
    }
    const target: Target = { keyword, grantKeyword: 'TABLE', name };
    const comments: DdlStatement[] = [];
    if (v.comment !== undefined)
      comments.push(
        stmt('comment', name, `COMMENT ON ${keyword} ${name} IS ${quoteLiteral(v.comment)}`),
      );
    const columnGrants: DdlStatement[] = [];
    for (const c of v.columns) {
      const col = `${name}.${quoteIdent(c.name)}`;
      if (c.comment !== undefined)
        comments.push(
          stmt('comment', col, `COMMENT ON COLUMN ${col} IS ${quoteLiteral(c.comment)}`),
        );
      if (c.acl !== undefined)
        columnGrants.push(
          ...this.grantStatements(target, v.owner, c.acl, ` (${quoteIdent(c.name)})`),
        );
    }
    this.commentStatements(ref, comments);
    this.ownerAndGrants(ref, target, v.owner, v.acl, undefined, columnGrants);
  }

  /** Ref of the relation (table or view) named `schema.name`. */
  private relationRef(schema: string, name: string): ObjectRef {
    return this.tables.has(tableKey(schema, name))
      ? qualifiedRef('table', schema, name)
      : qualifiedRef('view', schema, name);
  }

  /** `table` for a table's sub-object; undefined when it is on a view or materialized view. */
  private tableOf(schema: string, name: string): string | undefined {
    const key = tableKey(schema, name);
    return this.tables.has(key) ? key : undefined;
  }

  private withTable(node: Omit<Node, 'seq'>, schema: string, table: string): Omit<Node, 'seq'> {
    const key = this.tableOf(schema, table);
    if (key !== undefined) node.table = key;
    return node;
  }

  private constraint(c: ConstraintModel): void {
    const ref = tableObjectRef('constraint', c.schema, c.table, c.name);
    const table = qualify(c.schema, c.table);
    const partitioned = this.tables.get(tableKey(c.schema, c.table))?.kind === 'partitioned';
    const fk = c.type === 'foreign-key';
    // ONLY keeps an index-backed constraint off the partitions (each has its own, attached
    // below); a foreign key on a partitioned table cannot be ONLY, and is cloned to partitions.
    const only = fk && partitioned ? '' : 'ONLY ';
    const statements = [
      stmt(
        fk ? 'foreign-key' : 'constraint',
        `${c.name} on ${table}`,
        `ALTER TABLE ${only}${table} ADD CONSTRAINT ${quoteIdent(c.name)} ${c.definition}`,
      ),
    ];
    if (c.clustered === true) {
      statements.push(
        stmt('constraint', table, `ALTER TABLE ${table} CLUSTER ON ${quoteIdent(c.name)}`),
      );
    }
    const node = this.withTable(
      {
        id: ref,
        phase: Phase.Post,
        priority: fk ? PRIORITY.foreignKey : PRIORITY.constraint,
        deps: [...c.dependsOn, this.relationRef(c.schema, c.table)],
        statements,
      },
      c.schema,
      c.table,
    );
    if (c.references !== undefined)
      node.needsTables = [tableKey(c.references.schema, c.references.name)];
    this.add(node);
    if (c.parentIndex !== undefined)
      this.attachIndex(c.schema, c.name, c.parentIndex, ref, c.table);
    if (c.comment !== undefined) {
      this.comment(
        ref,
        { keyword: 'CONSTRAINT', grantKeyword: '', name: `${quoteIdent(c.name)} ON ${table}` },
        c.comment,
        this.tableOf(c.schema, c.table),
      );
    }
  }

  /** ALTER INDEX parent ATTACH PARTITION child, once both exist. */
  private attachIndex(
    schema: string,
    name: string,
    parent: { schema: string; name: string },
    childRef: ObjectRef,
    table: string,
  ): void {
    const parentTable = this.indexTable(parent);
    const parentRefs = [qualifiedRef('index', parent.schema, parent.name)];
    if (parentTable !== undefined) {
      parentRefs.push(tableObjectRef('constraint', parent.schema, parentTable, parent.name));
    }
    const node = this.withTable(
      {
        id: `attach|${childRef}`,
        phase: Phase.Post,
        priority: PRIORITY.indexAttach,
        deps: [childRef, ...parentRefs],
        statements: [
          stmt(
            'index-attach',
            qualify(schema, name),
            `ALTER INDEX ${qualify(parent.schema, parent.name)} ATTACH PARTITION ${qualify(schema, name)}`,
          ),
        ],
      },
      schema,
      table,
    );
    if (parentTable !== undefined) node.needsTables = [tableKey(parent.schema, parentTable)];
    this.add(node);
  }

  /** The table of index `idx` (a plain index or a constraint's). */
  private indexTable(idx: { schema: string; name: string }): string | undefined {
    return this.indexTables.get(tableKey(idx.schema, idx.name));
  }

  private index(i: SchemaModel['indexes'][number]): void {
    const ref = qualifiedRef('index', i.schema, i.name);
    const name = qualify(i.schema, i.name);
    const table = qualify(i.schema, i.table);
    const statements = [stmt('index', name, i.definition)];
    if (i.clustered === true)
      statements.push(stmt('index', name, `ALTER TABLE ${table} CLUSTER ON ${quoteIdent(i.name)}`));
    for (const [column, target] of i.statistics ?? []) {
      statements.push(
        stmt('index', name, `ALTER INDEX ${name} ALTER COLUMN ${column} SET STATISTICS ${target}`),
      );
    }
    this.add(
      this.withTable(
        {
          id: ref,
          phase: Phase.Post,
          priority: PRIORITY.index,
          deps: [...i.dependsOn, this.relationRef(i.schema, i.table)],
          statements,
        },
        i.schema,
        i.table,
      ),
    );
    if (i.parentIndex !== undefined)
      this.attachIndex(i.schema, i.name, i.parentIndex, ref, i.table);
    if (i.comment !== undefined) {
      this.comment(
        ref,
        { keyword: 'INDEX', grantKeyword: '', name },
        i.comment,
        this.tableOf(i.schema, i.table),
      );
    }
  }

  private enableStatement(
    kind: 'TRIGGER' | 'RULE',
    state: 'origin' | 'disabled' | 'replica' | 'always',
    table: string,
    name: string,
  ): DdlStatement[] {
    const how = {
      origin: '',
      disabled: 'DISABLE',
      replica: 'ENABLE REPLICA',
      always: 'ENABLE ALWAYS',
    }[state];
    if (how === '') return [];
    return [
      stmt(kind.toLowerCase(), table, `ALTER TABLE ${table} ${how} ${kind} ${quoteIdent(name)}`),
    ];
  }

  private trigger(t: SchemaModel['triggers'][number]): void {
    const ref = tableObjectRef('trigger', t.schema, t.table, t.name);
    const table = qualify(t.schema, t.table);
    this.add(
      this.withTable(
        {
          id: ref,
          phase: Phase.Post,
          priority: PRIORITY.trigger,
          deps: [...t.dependsOn, this.relationRef(t.schema, t.table)],
          statements: [
            stmt('trigger', `${t.name} on ${table}`, t.definition),
            ...this.enableStatement('TRIGGER', t.enabled, table, t.name),
          ],
        },
        t.schema,
        t.table,
      ),
    );
    if (t.comment !== undefined) {
      this.comment(
        ref,
        { keyword: 'TRIGGER', grantKeyword: '', name: `${quoteIdent(t.name)} ON ${table}` },
        t.comment,
        this.tableOf(t.schema, t.table),
      );
    }
  }

  private rule(r: SchemaModel['rules'][number]): void {
    const ref = tableObjectRef('rule', r.schema, r.table, r.name);
    const table = qualify(r.schema, r.table);
    this.add(
      this.withTable(
        {
          id: ref,
          phase: Phase.Post,
          priority: PRIORITY.rule,
          deps: [...r.dependsOn, this.relationRef(r.schema, r.table)],
          statements: [
            stmt('rule', `${r.name} on ${table}`, trimSemicolon(r.definition)),
            ...this.enableStatement('RULE', r.enabled, table, r.name),
          ],
        },
        r.schema,
        r.table,
      ),
    );
    if (r.comment !== undefined) {
      this.comment(
        ref,
        { keyword: 'RULE', grantKeyword: '', name: `${quoteIdent(r.name)} ON ${table}` },
        r.comment,
        this.tableOf(r.schema, r.table),
      );
    }
  }

  private policy(p: SchemaModel['policies'][number]): void {
    const ref = tableObjectRef('policy', p.schema, p.table, p.name);
    const table = qualify(p.schema, p.table);
    const roles = p.roles.map((r) => (r === null ? 'PUBLIC' : quoteIdent(r))).join(', ');
    let sql = `CREATE POLICY ${quoteIdent(p.name)} ON ${table} AS ${p.permissive ? 'PERMISSIVE' : 'RESTRICTIVE'} FOR ${p.command} TO ${roles}`;
    if (p.using !== undefined) sql += ` USING (${p.using})`;
    if (p.withCheck !== undefined) sql += ` WITH CHECK (${p.withCheck})`;
    this.add(
      this.withTable(
        {
          id: ref,
          phase: Phase.Post,
          priority: PRIORITY.policy,
          deps: [...p.dependsOn, this.relationRef(p.schema, p.table)],
          statements: [stmt('policy', `${p.name} on ${table}`, sql)],
        },
        p.schema,
        p.table,
      ),
    );
    if (p.comment !== undefined) {
      this.comment(
        ref,
        { keyword: 'POLICY', grantKeyword: '', name: `${quoteIdent(p.name)} ON ${table}` },
        p.comment,
        this.tableOf(p.schema, p.table),
      );
    }
  }

  private statisticsObject(s: SchemaModel['statistics'][number]): void {
    const ref = qualifiedRef('statistics', s.schema, s.name);
    const name = qualify(s.schema, s.name);
    const statements = [stmt('statistics', name, s.definition)];
    if (s.target !== undefined)
      statements.push(
        stmt('statistics', name, `ALTER STATISTICS ${name} SET STATISTICS ${s.target}`),
      );
    const table = this.tableOf(s.table.schema, s.table.name);
    const node: Omit<Node, 'seq'> = {
      id: ref,
      phase: Phase.Post,
      priority: PRIORITY.statistics,
      deps: [...s.dependsOn, this.relationRef(s.table.schema, s.table.name)],
      statements,
    };
    if (table !== undefined) node.table = table;
    this.add(node);
    const target: Target = { keyword: 'STATISTICS', grantKeyword: '', name };
    if (s.comment !== undefined) this.comment(ref, target, s.comment, table);
    this.ownerAndGrants(ref, target, s.owner, null, table);
  }
}

/**
 * Sorts nodes: pre-data first (with everything it depends on pulled in),
 * then post-data, then the final phase; within a phase dependencies first,
 * then kind priority, then model order. A dependency cycle (which pg_depend
 * does not normally contain) is broken at the node that would come first.
 */
function order(nodes: Node[]): GeneratedDdl {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const phase = new Map(nodes.map((n) => [n.id, n.phase]));
  const pull = (n: Node): void => {
    for (const d of n.deps) {
      const dep = byId.get(d);
      if (dep !== undefined && (phase.get(d) ?? Phase.Pre) > Phase.Pre) {
        phase.set(d, Phase.Pre);
        pull(dep);
      }
    }
  };
  for (const n of nodes) if (n.phase === Phase.Pre) pull(n);

  const key = (n: Node): [number, number, number] => [
    phase.get(n.id) ?? n.phase,
    n.priority,
    n.seq,
  ];
  const before = (a: Node, b: Node): boolean => {
    const ka = key(a);
    const kb = key(b);
    for (let i = 0; i < 3; i++) {
      if (ka[i]! !== kb[i]!) return ka[i]! < kb[i]!;
    }
    return false;
  };
  const waiting = new Map<string, number>();
  const dependents = new Map<string, Node[]>();
  for (const n of nodes) {
    const deps = [...new Set(n.deps)].filter((d) => byId.has(d));
    waiting.set(n.id, deps.length);
    for (const d of deps) {
      const list = dependents.get(d) ?? [];
      list.push(n);
      dependents.set(d, list);
    }
  }
  const ready = new Heap<Node>(before);
  for (const n of nodes) if (waiting.get(n.id) === 0) ready.push(n);
  const done = new Set<string>();
  const out: Node[] = [];
  const emit = (n: Node) => {
    done.add(n.id);
    out.push(n);
    for (const d of dependents.get(n.id) ?? []) {
      const left = (waiting.get(d.id) ?? 0) - 1;
      waiting.set(d.id, left);
      if (left === 0 && !done.has(d.id)) ready.push(d);
    }
  };
  while (out.length < nodes.length) {
    const next = ready.pop();
    if (next !== undefined) {
      if (!done.has(next.id)) emit(next);
      continue;
    }
    let first: Node | undefined;
    for (const n of nodes)
      if (!done.has(n.id) && (first === undefined || before(n, first))) first = n;
    if (first === undefined) break;
    emit(first);
  }
  const preData: DdlStatement[] = [];
  const postData: DdlStatement[] = [];
  for (const n of out) {
    (phase.get(n.id) === Phase.Pre ? preData : postData).push(...n.statements);
  }
  return { preData, postData };
}

/** A binary min-heap. */
class Heap<T> {
  private readonly items: T[] = [];
  constructor(private readonly less: (a: T, b: T) => boolean) {}

  push(item: T): void {
    const a = this.items;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(a[i]!, a[p]!)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }

  pop(): T | undefined {
    const a = this.items;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last !== undefined) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.less(a[l]!, a[m]!)) m = l;
        if (r < a.length && this.less(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }
}
