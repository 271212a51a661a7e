/**
 * Reading a database's schema from the catalogs into a SchemaModel.
 *
 * Only SELECTs: the caller runs this inside a REPEATABLE READ transaction on
 * an imported snapshot. For the duration, search_path is empty (so every
 * deparsed name is schema-qualified, as pg_dump does it) and date, interval
 * and float output use the unambiguous settings; the previous values are put
 * back before returning.
 *
 * System schemas, temporary objects and the members of extensions are left
 * out (an extension is recreated as a whole). Everything else is either in
 * the model or named in `unsupported`.
 */
import { OperationError } from '../../errors.js';
import type { PgClient } from '../connect.js';
import { DEFAULT_PUBLICATION } from '../replication/stream.js';
import { inheritsKeepsOrder } from './inheritance.js';
import type {
  Acl,
  AclEntry,
  AggregateModel,
  CheckConstraintModel,
  CollationModel,
  ColumnModel,
  CompositeTypeModel,
  ConstraintModel,
  DatabaseModel,
  DomainTypeModel,
  EnumTypeModel,
  ExtensionModel,
  FunctionModel,
  IndexModel,
  InitialPrivilegesChange,
  NamespaceModel,
  ObjectRef,
  PolicyModel,
  PrivilegeItem,
  RangeTypeModel,
  RuleModel,
  SchemaModel,
  SequenceModel,
  StatisticsModel,
  TableModel,
  TextSearchConfigurationModel,
  TextSearchDictionaryModel,
  TriggerModel,
  TypeModel,
  UnsupportedObject,
  ViewColumnModel,
  ViewModel,
} from './model.js';
import { SCHEMA_MODEL_VERSION } from './model.js';
import { qualify, quoteLiteral } from './quote.js';
import { functionRef, qualifiedRef, tableObjectRef, unqualifiedRef } from './refs.js';
import { INTERNAL_SCHEMA_FILTER } from './shapes.js';

type Row = Record<string, string | null>;

/** OIDs below this were assigned by initdb: built-in objects, never user objects. */
const FIRST_NORMAL_OID = 16384;

/**
 * Namespaces that hold user objects: not pg_catalog, pg_toast, temp schemas,
 * information_schema, nor `_flashback` (capture's own objects on the source).
 */
const USER_NS = INTERNAL_SCHEMA_FILTER;

/**
 * Whether an object is an internal part of another (a range type's
 * constructor functions and casts): created with it, never on its own.
 */
function internalPart(catalog: string, oid: string): string {
  return `EXISTS (SELECT 1 FROM pg_depend i WHERE i.classid = '${catalog}'::regclass
    AND i.objid = ${oid} AND i.deptype = 'i')`;
}

/** The ACL in `expr` as JSON `[[grantee|null, grantor, privilege, grantable], ...]`, or NULL. */
function aclJson(expr: string): string {
  return `CASE WHEN ${expr} IS NULL THEN NULL ELSE (SELECT coalesce(json_agg(json_build_array(
    CASE WHEN x.grantee = 0 THEN NULL ELSE pg_get_userbyid(x.grantee) END,
    pg_get_userbyid(x.grantor), x.privilege_type, x.is_grantable)), '[]')::text
    FROM aclexplode(${expr}) x) END`;
}

/** Quoted, qualified name of the collation with OID `expr`. */
function collationName(expr: string): string {
  return `(SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
    FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = ${expr})`;
}

/** Reads the schema of the connected database. */
export async function readSchema(client: PgClient): Promise<SchemaModel> {
  const saved = await setSessionForReading(client);
  try {
    return await new SchemaReader(client).read();
  } catch (err) {
    // 22021: the catalog holds text that is not UTF-8 (see client_encoding below).
    if ((err as { code?: unknown }).code === '22021') {
      throw new OperationError(
        'schema.encoding',
        `the database's schema holds text that is not UTF-8 (${(err as Error).message}): a default, comment, check or function body written in another encoding into a SQL_ASCII database cannot be recorded faithfully, so nothing was backed up`,
        {
          hint: 'rewrite that text in UTF-8 (or in ASCII), or dump this database with pg_dump; its rows alone would back up byte for byte',
          cause: err,
        },
      );
    }
    throw err;
  } finally {
    await restoreSession(client, saved);
  }
}

const SESSION_SETTINGS: Readonly<Record<string, string>> = {
  search_path: '',
  // Catalog text (defaults, comments, bodies) is read as JavaScript strings:
  // in a SQL_ASCII database a byte past 127 would come back as U+FFFD and
  // the DDL be recorded altered, without a word (src/pg/connect.ts sets such
  // sessions to SQL_ASCII, for the rows). UTF8 here makes such text an
  // error ("invalid byte sequence") instead.
  client_encoding: 'UTF8',
  DateStyle: 'ISO, YMD',
  IntervalStyle: 'postgres',
  extra_float_digits: '3',
};

async function setSessionForReading(client: PgClient): Promise<Map<string, string>> {
  const saved = new Map<string, string>();
  for (const [name, value] of Object.entries(SESSION_SETTINGS)) {
    const r = await client.query<Row>(
      'SELECT current_setting($1) AS old, set_config($1, $2, false) AS new',
      [name, value],
    );
    saved.set(name, r.rows[0]?.old ?? '');
  }
  return saved;
}

async function restoreSession(client: PgClient, saved: Map<string, string>): Promise<void> {
  for (const [name, value] of saved) {
    // In an aborted transaction this fails; the caller's rollback restores the settings then.
    await client.query('SELECT set_config($1, $2, false)', [name, value]).catch(() => {});
  }
}

function s(row: Row, key: string): string {
  const v = row[key];
  if (v === null || v === undefined) throw new Error(`catalog query: column ${key} is null`);
  return v;
}

function bool(row: Row, key: string): boolean {
  return row[key] === 't';
}

/** Copies `value` into `target[key]` unless it is null (optional properties stay absent). */
function setOpt<T extends object, K extends keyof T>(
  target: T,
  key: K,
  value: T[K] | null | undefined,
): void {
  if (value !== null && value !== undefined) target[key] = value;
}

function parseAcl(json: string | null): Acl {
  if (json === null) return null;
  const items = JSON.parse(json) as Array<[string | null, string, string, boolean]>;
  const groups = new Map<string, AclEntry>();
  for (const [grantee, grantor, privilege, grantable] of items) {
    const key = JSON.stringify([grantee, grantor]);
    let entry = groups.get(key);
    if (entry === undefined) {
      entry = { grantee, grantor, privileges: [], grantable: [] };
      groups.set(key, entry);
    }
    entry.privileges.push(privilege);
    if (grantable) entry.grantable.push(privilege);
  }
  const entries = [...groups.values()];
  for (const e of entries) {
    e.privileges.sort();
    e.grantable.sort();
  }
  // The order of items in an aclitem[] follows the order of GRANTs; it means nothing.
  return entries.sort(
    (a, b) =>
      compare(a.grantee ?? '', b.grantee ?? '') ||
      Number(a.grantee !== null) - Number(b.grantee !== null) ||
      compare(a.grantor, b.grantor),
  );
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function byName<T extends { schema?: string; name: string }>(a: T, b: T): number {
  return compare(a.schema ?? '', b.schema ?? '') || compare(a.name, b.name);
}

function byTableThenName<T extends { schema: string; table: string; name: string }>(
  a: T,
  b: T,
): number {
  return compare(a.schema, b.schema) || compare(a.table, b.table) || compare(a.name, b.name);
}

function enabledState(code: string): 'origin' | 'disabled' | 'replica' | 'always' {
  switch (code) {
    case 'D':
      return 'disabled';
    case 'R':
      return 'replica';
    case 'A':
      return 'always';
    default:
      return 'origin';
  }
}

const STORAGE: Readonly<Record<string, string>> = {
  p: 'plain',
  e: 'external',
  m: 'main',
  x: 'extended',
};

const POLICY_COMMAND: Readonly<Record<string, PolicyModel['command']>> = {
  '*': 'ALL',
  r: 'SELECT',
  a: 'INSERT',
  w: 'UPDATE',
  d: 'DELETE',
};

/** A relation in the model, by OID. */
interface RelInfo {
  schema: string;
  name: string;
  kind: string;
  ref: ObjectRef;
}

/** One reading pass; holds the OID maps that dependencies are resolved through. */
class SchemaReader {
  private version = 0;
  /** `catalog:oid` of extension members, to their extension's ref. */
  private readonly members = new Map<string, ObjectRef>();
  /** `catalog:oid` of every model object (and of sub-objects, to their owner's ref). */
  private readonly refs = new Map<string, ObjectRef>();
  /** Dependencies found, by depender ref. */
  private readonly deps = new Map<ObjectRef, Set<ObjectRef>>();
  private readonly rels = new Map<string, RelInfo>();
  private readonly unsupported: UnsupportedObject[] = [];
  /** Objects not recreated, by `catalog:oid`, to name what needs them. */
  private readonly notRecreated = new Map<string, UnsupportedObject>();

  constructor(private readonly client: PgClient) {}

  private async q(text: string): Promise<Row[]> {
    return (await this.client.query<Row>(text)).rows;
  }

  private isMember(catalog: string, oid: string): boolean {
    return this.members.has(`${catalog}:${oid}`);
  }

  /**
   * Records an object that is not recreated. `key` (`catalog:oid`) lets
   * readDependencies name the model objects that need it (`neededBy`).
   */
  private note(kind: string, name: string, reason: string, key?: string): void {
    const u: UnsupportedObject = { kind, name, reason };
    this.unsupported.push(u);
    if (key !== undefined) this.notRecreated.set(key, u);
  }

  async read(): Promise<SchemaModel> {
    const [v] = await this.q(`SELECT current_setting('server_version_num') AS v`);
    this.version = Number(s(v ?? {}, 'v'));
    await this.readMembers();
    const schemas = await this.readSchemas();
    const extensions = await this.readExtensions();
    const collations = await this.readCollations();
    const { dictionaries, configurations } = await this.readTextSearch();
    const types = await this.readTypes();
    const functions = await this.readFunctions();
    const aggregates = await this.readAggregates();
    await this.readRelations();
    const sequences = await this.readSequences();
    const tables = await this.readTables();
    this.noteInheritanceOrder(tables);
    const views = await this.readViews();
    const { constraints, indexes } = await this.readConstraintsAndIndexes();
    const triggers = await this.readTriggers();
    const rules = await this.readRules();
    const policies = await this.readPolicies();
    const statistics = await this.readStatistics();
    await this.readUnsupported();
    await this.readDependencies();
    const database = await this.readDatabase();
    const initialPrivilegesChanged = await this.readInitialPrivilegesChanged();

    const withDeps = <T extends { dependsOn: ObjectRef[] }>(ref: ObjectRef, obj: T): T => {
      obj.dependsOn = [...(this.deps.get(ref) ?? [])].filter((d) => d !== ref).sort();
      return obj;
    };
    for (const x of schemas) withDeps(unqualifiedRef('schema', x.name), x);
    for (const x of extensions) withDeps(unqualifiedRef('extension', x.name), x);
    for (const x of collations) withDeps(qualifiedRef('collation', x.schema, x.name), x);
    for (const x of dictionaries) withDeps(qualifiedRef('tsdictionary', x.schema, x.name), x);
    for (const x of configurations) withDeps(qualifiedRef('tsconfig', x.schema, x.name), x);
    for (const x of types) withDeps(qualifiedRef('type', x.schema, x.name), x);
    for (const x of functions) withDeps(functionRef(x.schema, x.name, x.signature), x);
    for (const x of aggregates) withDeps(functionRef(x.schema, x.name, x.signature), x);
    for (const x of sequences) withDeps(qualifiedRef('sequence', x.schema, x.name), x);
    for (const x of tables) withDeps(qualifiedRef('table', x.schema, x.name), x);
    for (const x of views) withDeps(qualifiedRef('view', x.schema, x.name), x);
    for (const x of constraints)
      withDeps(tableObjectRef('constraint', x.schema, x.table, x.name), x);
    for (const x of indexes) withDeps(qualifiedRef('index', x.schema, x.name), x);
    for (const x of triggers) withDeps(tableObjectRef('trigger', x.schema, x.table, x.name), x);
    for (const x of rules) withDeps(tableObjectRef('rule', x.schema, x.table, x.name), x);
    for (const x of policies) withDeps(tableObjectRef('policy', x.schema, x.table, x.name), x);
    for (const x of statistics) withDeps(qualifiedRef('statistics', x.schema, x.name), x);

    return {
      version: SCHEMA_MODEL_VERSION,
      serverVersionNum: this.version,
      schemas: schemas.sort(byName),
      extensions: extensions.sort(byName),
      collations: collations.sort(byName),
      textSearchDictionaries: dictionaries.sort(byName),
      textSearchConfigurations: configurations.sort(byName),
      types: types.sort(byName),
      functions: functions.sort(
        (a, b) => byName(a, b) || compare(a.identityArguments, b.identityArguments),
      ),
      aggregates: aggregates.sort(
        (a, b) => byName(a, b) || compare(a.identityArguments, b.identityArguments),
      ),
      tables: tables.sort(byName),
      sequences: sequences.sort(byName),
      constraints: constraints.sort(byTableThenName),
      indexes: indexes.sort(byName),
      views: views.sort(byName),
      triggers: triggers.sort(byTableThenName),
      rules: rules.sort(byTableThenName),
      policies: policies.sort(byTableThenName),
      statistics: statistics.sort(byName),
      unsupported: this.unsupported.sort(
        (a, b) => compare(a.kind, b.kind) || compare(a.name, b.name),
      ),
      database,
      initialPrivilegesChanged,
    };
  }

  /**
   * Privileges granted or revoked on objects a restore does not create
   * (InitialPrivilegesChange): functions, relations, types, schemas and
   * languages that are built in or an extension's members, whose ACL differs
   * from their initial one. Hardening such as REVOKE EXECUTE ON FUNCTION
   * pg_catalog.pg_sleep FROM PUBLIC would otherwise be undone by a restore.
   * Column privileges on such tables are not read.
   */
  private async readInitialPrivilegesChanged(): Promise<InitialPrivilegesChange[]> {
    const rows = await this.q(`
      WITH objects AS (
        SELECT 'pg_proc'::regclass AS cls, p.oid, 'ROUTINE' AS kind, p.oid::regprocedure::text AS name,
          p.proacl AS acl, p.proowner AS owner, 'f'::"char" AS dflt
          FROM pg_proc p WHERE p.proacl IS NOT NULL
        UNION ALL SELECT 'pg_class'::regclass, c.oid, CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
          c.oid::regclass::text, c.relacl, c.relowner, CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char"
          FROM pg_class c WHERE c.relacl IS NOT NULL AND c.relkind IN ('r', 'v', 'm', 'p', 'f', 'S')
        UNION ALL SELECT 'pg_type'::regclass, t.oid, 'TYPE',
          -- (Not format_type: "timestamp with time zone" is no name GRANT takes.)
          quote_ident(tn.nspname) || '.' || quote_ident(t.typname), t.typacl, t.typowner, 'T'
          FROM pg_type t JOIN pg_namespace tn ON tn.oid = t.typnamespace WHERE t.typacl IS NOT NULL
        UNION ALL SELECT 'pg_namespace'::regclass, n.oid, 'SCHEMA', quote_ident(n.nspname), n.nspacl, n.nspowner, 'n'
          FROM pg_namespace n WHERE n.nspacl IS NOT NULL AND n.nspname <> 'public'
        UNION ALL SELECT 'pg_language'::regclass, l.oid, 'LANGUAGE', quote_ident(l.lanname), l.lanacl, l.lanowner, 'l'
          FROM pg_language l WHERE l.lanacl IS NOT NULL),
      theirs AS (
        SELECT o.*, (SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                      WHERE d.classid = o.cls AND d.objid = o.oid AND d.deptype = 'e'
                        AND d.refclassid = 'pg_extension'::regclass) AS extension,
          coalesce((SELECT i.initprivs FROM pg_init_privs i
                     WHERE i.classoid = o.cls AND i.objoid = o.oid AND i.objsubid = 0),
                   -- information_schema is made after initdb records initial
                   -- privileges: what it grants PUBLIC (USAGE on it, SELECT on
                   -- its views and tables) is its initial state.
                   CASE WHEN o.cls = 'pg_namespace'::regclass AND o.oid = 'information_schema'::regnamespace
                          THEN array_append(acldefault('n', o.owner), makeaclitem(0, o.owner, 'USAGE', false))
                        WHEN o.cls = 'pg_class'::regclass AND o.dflt = 'r' AND EXISTS (
                               SELECT 1 FROM pg_class ic WHERE ic.oid = o.oid
                                  AND ic.relnamespace = 'information_schema'::regnamespace)
                          THEN array_append(acldefault('r', o.owner), makeaclitem(0, o.owner, 'SELECT', false))
                        ELSE acldefault(o.dflt, o.owner) END) AS base
          FROM objects o),
      changed AS (
        SELECT * FROM theirs WHERE (oid < ${FIRST_NORMAL_OID} OR extension IS NOT NULL)
          AND acl::text[] IS DISTINCT FROM base::text[]),
      now AS (
        SELECT c.cls, c.oid, x.grantee, x.privilege_type AS priv, bool_or(x.is_grantable) AS g
          FROM changed c, aclexplode(c.acl) x WHERE x.grantee <> c.owner GROUP BY 1, 2, 3, 4),
      was AS (
        SELECT c.cls, c.oid, x.grantee, x.privilege_type AS priv, bool_or(x.is_grantable) AS g
          FROM changed c, aclexplode(c.base) x WHERE x.grantee <> c.owner GROUP BY 1, 2, 3, 4)
      SELECT c.kind, c.name, c.extension,
        CASE WHEN d.grantee = 0 THEN NULL ELSE pg_get_userbyid(d.grantee) END AS grantee,
        d.priv, d.now_g, d.was_g
      FROM (SELECT coalesce(n.cls, w.cls) AS cls, coalesce(n.oid, w.oid) AS oid,
                   coalesce(n.grantee, w.grantee) AS grantee, coalesce(n.priv, w.priv) AS priv,
                   n.g AS now_g, w.g AS was_g
              FROM now n FULL JOIN was w
                ON w.cls = n.cls AND w.oid = n.oid AND w.grantee = n.grantee AND w.priv = n.priv
             WHERE n.g IS DISTINCT FROM w.g) d
      JOIN changed c ON c.cls = d.cls AND c.oid = d.oid`);
    const byObject = new Map<string, InitialPrivilegesChange>();
    for (const r of rows) {
      const key = `${s(r, 'kind')} ${s(r, 'name')}`;
      let change = byObject.get(key);
      if (change === undefined) {
        change = { kind: s(r, 'kind'), name: s(r, 'name'), grants: [], revokes: [] };
        setOpt(change, 'extension', r.extension);
        byObject.set(key, change);
      }
      const grantee = r.grantee ?? null;
      const privilege = s(r, 'priv');
      // Held before in another form (with or without grant option): revoked, then granted as now.
      if (r.was_g !== null && r.was_g !== undefined) change.revokes.push({ grantee, privilege });
      if (r.now_g !== null && r.now_g !== undefined)
        change.grants.push({ grantee, privilege, grantable: r.now_g === 't' });
    }
    const order = (a: PrivilegeItem, b: PrivilegeItem) =>
      compare(a.grantee ?? '', b.grantee ?? '') || compare(a.privilege, b.privilege);
    return [...byObject.values()]
      .map((c) => ({ ...c, grants: c.grants.sort(order), revokes: c.revokes.sort(order) }))
      .sort((a, b) => compare(a.kind, b.kind) || compare(a.name, b.name));
  }

  /** The database's owner, privileges, connection limit, settings for every role, and comment. */
  private async readDatabase(): Promise<DatabaseModel> {
    const [r] = await this.q(`
      SELECT pg_get_userbyid(d.datdba) AS owner, ${aclJson('d.datacl')} AS acl,
        d.datconnlimit::text AS connlimit, shobj_description(d.oid, 'pg_database') AS comment,
        (SELECT coalesce(json_agg(x ORDER BY x), '[]')::text
           FROM pg_db_role_setting rs, unnest(rs.setconfig) x
          WHERE rs.setdatabase = d.oid AND rs.setrole = 0) AS settings
      FROM pg_database d WHERE d.datname = current_database()`);
    const row = r ?? {};
    const db: DatabaseModel = {
      owner: s(row, 'owner'),
      acl: parseAcl(row.acl ?? null),
      connectionLimit: Number(s(row, 'connlimit')),
      settings: JSON.parse(s(row, 'settings')) as string[],
    };
    setOpt(db, 'comment', row.comment);
    return db;
  }

  private async readMembers(): Promise<void> {
    const rows = await this.q(`
      SELECT d.classid::regclass::text AS cls, d.objid::text AS oid, e.extname
      FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
      WHERE d.deptype = 'e' AND d.refclassid = 'pg_extension'::regclass`);
    for (const r of rows) {
      this.members.set(
        `${s(r, 'cls')}:${s(r, 'oid')}`,
        unqualifiedRef('extension', s(r, 'extname')),
      );
    }
  }

  private async readSchemas(): Promise<NamespaceModel[]> {
    const rows = await this.q(`
      SELECT n.oid, n.nspname, pg_get_userbyid(n.nspowner) AS owner,
        obj_description(n.oid, 'pg_namespace') AS comment, ${aclJson('n.nspacl')} AS acl
      FROM pg_namespace n WHERE ${USER_NS}`);
    const out: NamespaceModel[] = [];
    for (const r of rows) {
      if (this.isMember('pg_namespace', s(r, 'oid'))) continue;
      const ns: NamespaceModel = {
        name: s(r, 'nspname'),
        owner: s(r, 'owner'),
        acl: parseAcl(r.acl ?? null),
        dependsOn: [],
      };
      setOpt(ns, 'comment', r.comment);
      this.refs.set(`pg_namespace:${s(r, 'oid')}`, unqualifiedRef('schema', ns.name));
      out.push(ns);
    }
    return out;
  }

  private async readExtensions(): Promise<ExtensionModel[]> {
    const rows = await this.q(`
      SELECT e.oid, e.extname, n.nspname, e.extversion, e.extconfig IS NOT NULL AS has_config,
        obj_description(e.oid, 'pg_extension') AS comment
      FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
      WHERE e.oid >= ${FIRST_NORMAL_OID}`);
    const out: ExtensionModel[] = [];
    for (const r of rows) {
      const ext: ExtensionModel = {
        name: s(r, 'extname'),
        schema: s(r, 'nspname'),
        version: s(r, 'extversion'),
        dependsOn: [],
      };
      setOpt(ext, 'comment', r.comment);
      this.refs.set(`pg_extension:${s(r, 'oid')}`, unqualifiedRef('extension', ext.name));
      if (bool(r, 'has_config')) {
        this.note(
          'extension configuration data',
          ext.name,
          'rows the extension marks as configuration (pg_extension_config_dump) are not backed up; the extension is recreated with its initial configuration',
        );
      }
      out.push(ext);
    }
    return out;
  }

  /**
   * Text search dictionaries on built-in or extension templates, and
   * configurations on built-in or extension parsers, with their mappings.
   * Those on user-made templates or parsers (C code) stay unsupported.
   */
  private async readTextSearch(): Promise<{
    dictionaries: TextSearchDictionaryModel[];
    configurations: TextSearchConfigurationModel[];
  }> {
    const qualified = (nsp: string, name: string) =>
      `(SELECT quote_ident(x.nspname) FROM pg_namespace x WHERE x.oid = ${nsp}) || '.' || quote_ident(${name})`;
    // Built in, or an extension's member: exists once the extension is created.
    const available = (cls: string, oid: string) =>
      `(${oid} < ${FIRST_NORMAL_OID} OR EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '${cls}'::regclass
         AND e.objid = ${oid} AND e.deptype = 'e'))`;
    const dictionaries: TextSearchDictionaryModel[] = [];
    for (const r of await this.q(`
      SELECT d.oid, n.nspname, d.dictname, ${qualified('t.tmplnamespace', 't.tmplname')} AS template,
        d.dictinitoption, pg_get_userbyid(d.dictowner) AS owner, obj_description(d.oid, 'pg_ts_dict') AS comment
      FROM pg_ts_dict d JOIN pg_namespace n ON n.oid = d.dictnamespace JOIN pg_ts_template t ON t.oid = d.dicttemplate
      WHERE ${USER_NS} AND d.oid >= ${FIRST_NORMAL_OID} AND ${available('pg_ts_template', 't.oid')}`)) {
      if (this.isMember('pg_ts_dict', s(r, 'oid'))) continue;
      const d: TextSearchDictionaryModel = {
        schema: s(r, 'nspname'),
        name: s(r, 'dictname'),
        template: s(r, 'template'),
        owner: s(r, 'owner'),
        dependsOn: [],
      };
      setOpt(d, 'options', r.dictinitoption);
      setOpt(d, 'comment', r.comment);
      this.refs.set(`pg_ts_dict:${s(r, 'oid')}`, qualifiedRef('tsdictionary', d.schema, d.name));
      dictionaries.push(d);
    }
    const configurations: TextSearchConfigurationModel[] = [];
    for (const r of await this.q(`
      SELECT c.oid, n.nspname, c.cfgname, ${qualified('p.prsnamespace', 'p.prsname')} AS parser,
        pg_get_userbyid(c.cfgowner) AS owner, obj_description(c.oid, 'pg_ts_config') AS comment,
        (SELECT coalesce(json_agg(json_build_array(m.token, m.dicts) ORDER BY m.token), '[]')::text
           FROM (SELECT t.alias AS token,
                        array_agg(${qualified('dd.dictnamespace', 'dd.dictname')} ORDER BY cm.mapseqno) AS dicts
                   FROM pg_ts_config_map cm
                   JOIN ts_token_type(c.cfgparser) t ON t.tokid = cm.maptokentype
                   JOIN pg_ts_dict dd ON dd.oid = cm.mapdict
                  WHERE cm.mapcfg = c.oid GROUP BY t.alias) m) AS mappings
      FROM pg_ts_config c JOIN pg_namespace n ON n.oid = c.cfgnamespace JOIN pg_ts_parser p ON p.oid = c.cfgparser
      WHERE ${USER_NS} AND c.oid >= ${FIRST_NORMAL_OID} AND ${available('pg_ts_parser', 'p.oid')}`)) {
      if (this.isMember('pg_ts_config', s(r, 'oid'))) continue;
      const c: TextSearchConfigurationModel = {
        schema: s(r, 'nspname'),
        name: s(r, 'cfgname'),
        parser: s(r, 'parser'),
        mappings: (JSON.parse(s(r, 'mappings')) as Array<[string, string[]]>).map(
          ([token, dictionaries]) => ({ token, dictionaries }),
        ),
        owner: s(r, 'owner'),
        dependsOn: [],
      };
      setOpt(c, 'comment', r.comment);
      this.refs.set(`pg_ts_config:${s(r, 'oid')}`, qualifiedRef('tsconfig', c.schema, c.name));
      configurations.push(c);
    }
    return { dictionaries, configurations };
  }

  private async readCollations(): Promise<CollationModel[]> {
    // The locale of an ICU collation moved from colliculocale (15, 16) to colllocale (17+).
    const locale = this.version >= 170000 ? 'c.colllocale' : 'c.colliculocale';
    const rules = this.version >= 160000 ? 'c.collicurules' : 'NULL::text';
    const rows = await this.q(`
      SELECT c.oid, n.nspname, c.collname, c.collprovider, c.collisdeterministic,
        c.collcollate, c.collctype, ${locale} AS locale, ${rules} AS rules,
        pg_get_userbyid(c.collowner) AS owner, obj_description(c.oid, 'pg_collation') AS comment
      FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace
      WHERE ${USER_NS} AND c.oid >= ${FIRST_NORMAL_OID}`);
    const providers: Readonly<Record<string, CollationModel['provider']>> = {
      c: 'libc',
      i: 'icu',
      b: 'builtin',
    };
    const out: CollationModel[] = [];
    for (const r of rows) {
      if (this.isMember('pg_collation', s(r, 'oid'))) continue;
      const schema = s(r, 'nspname');
      const name = s(r, 'collname');
      const provider = providers[s(r, 'collprovider')];
      if (provider === undefined) {
        this.note(
          'collation',
          qualify(schema, name),
          `collation provider '${s(r, 'collprovider')}' is not recreated`,
        );
        continue;
      }
      const c: CollationModel = {
        schema,
        name,
        provider,
        deterministic: bool(r, 'collisdeterministic'),
        owner: s(r, 'owner'),
        dependsOn: [],
      };
      if (provider === 'libc') {
        setOpt(c, 'lcCollate', r.collcollate);
        setOpt(c, 'lcCtype', r.collctype);
      } else {
        setOpt(c, 'locale', r.locale);
      }
      setOpt(c, 'rules', r.rules);
      setOpt(c, 'comment', r.comment);
      this.refs.set(`pg_collation:${s(r, 'oid')}`, qualifiedRef('collation', schema, name));
      out.push(c);
    }
    return out;
  }

  private async readTypes(): Promise<TypeModel[]> {
    const rows = await this.q(`
      SELECT t.oid, n.nspname, t.typname, t.typtype, t.typrelid, c.relkind, t.typarray,
        pg_get_userbyid(t.typowner) AS owner, obj_description(t.oid, 'pg_type') AS comment,
        ${aclJson('t.typacl')} AS acl,
        format_type(t.typbasetype, t.typtypmod) AS base_type, t.typnotnull, t.typdefault,
        CASE WHEN t.typtype = 'd' AND t.typcollation <> bt.typcollation
          THEN ${collationName('t.typcollation')} END AS collation
      FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        LEFT JOIN pg_type bt ON bt.oid = t.typbasetype
        LEFT JOIN pg_class c ON c.oid = t.typrelid
      WHERE ${USER_NS} AND t.oid >= ${FIRST_NORMAL_OID}`);
    const enumLabels = new Map<string, string[]>();
    for (const r of await this.q(`
      SELECT enumtypid, json_agg(enumlabel ORDER BY enumsortorder)::text AS labels
      FROM pg_enum WHERE enumtypid >= ${FIRST_NORMAL_OID} GROUP BY enumtypid`)) {
      enumLabels.set(s(r, 'enumtypid'), JSON.parse(s(r, 'labels')) as string[]);
    }
    const domainConstraints = new Map<string, DomainTypeModel['constraints']>();
    for (const r of await this.q(`
      SELECT oid, contypid, conname, pg_get_constraintdef(oid) AS def, convalidated,
        obj_description(oid, 'pg_constraint') AS comment
      FROM pg_constraint WHERE contypid <> 0 ORDER BY conname`)) {
      const list = domainConstraints.get(s(r, 'contypid')) ?? [];
      const c: DomainTypeModel['constraints'][number] = {
        name: s(r, 'conname'),
        definition: s(r, 'def'),
        validated: bool(r, 'convalidated'),
      };
      setOpt(c, 'comment', r.comment);
      list.push(c);
      domainConstraints.set(s(r, 'contypid'), list);
      this.refs.set(`pg_constraint:${s(r, 'oid')}`, `pending-type:${s(r, 'contypid')}`);
    }
    const attributes = new Map<string, CompositeTypeModel['attributes']>();
    for (const r of await this.q(`
      SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod) AS type,
        CASE WHEN a.attcollation <> t.typcollation THEN ${collationName('a.attcollation')} END AS collation,
        col_description(a.attrelid, a.attnum) AS comment
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_type t ON t.oid = a.atttypid
      WHERE c.relkind = 'c' AND a.attnum > 0 AND NOT a.attisdropped AND c.oid >= ${FIRST_NORMAL_OID}
      ORDER BY a.attrelid, a.attnum`)) {
      const list = attributes.get(s(r, 'attrelid')) ?? [];
      const a: CompositeTypeModel['attributes'][number] = {
        name: s(r, 'attname'),
        type: s(r, 'type'),
      };
      setOpt(a, 'collation', r.collation);
      setOpt(a, 'comment', r.comment);
      list.push(a);
      attributes.set(s(r, 'attrelid'), list);
    }
    const ranges = new Map<string, Row>();
    for (const r of await this.q(`
      SELECT r.rngtypid, format_type(r.rngsubtype, NULL) AS subtype,
        CASE WHEN NOT opc.opcdefault THEN quote_ident(on_.nspname) || '.' || quote_ident(opc.opcname) END AS opclass,
        CASE WHEN r.rngcollation <> 0 AND r.rngcollation <> st.typcollation THEN ${collationName('r.rngcollation')} END AS collation,
        CASE WHEN r.rngcanonical <> 0 THEN r.rngcanonical::regproc::text END AS canonical,
        CASE WHEN r.rngsubdiff <> 0 THEN r.rngsubdiff::regproc::text END AS subdiff,
        r.rngmultitypid, mn.nspname AS mschema, mt.typname AS mname
      FROM pg_range r JOIN pg_opclass opc ON opc.oid = r.rngsubopc
        JOIN pg_namespace on_ ON on_.oid = opc.opcnamespace
        JOIN pg_type st ON st.oid = r.rngsubtype
        JOIN pg_type mt ON mt.oid = r.rngmultitypid JOIN pg_namespace mn ON mn.oid = mt.typnamespace
      WHERE r.rngtypid >= ${FIRST_NORMAL_OID}`)) {
      ranges.set(s(r, 'rngtypid'), r);
    }

    // Array types and multiranges stand for their element or range type in dependencies.
    const aliases: Array<[string, string]> = [];
    const arrayTypes = new Set(rows.map((r) => r.typarray));
    const out: TypeModel[] = [];
    for (const r of rows) {
      const oid = s(r, 'oid');
      const array = r.typarray;
      if (array !== null && array !== undefined && array !== '0') aliases.push([array, oid]);
      if (this.isMember('pg_type', oid)) continue;
      const schema = s(r, 'nspname');
      const name = s(r, 'typname');
      const ref = qualifiedRef('type', schema, name);
      const typtype = s(r, 'typtype');
      const common = {
        schema,
        name,
        owner: s(r, 'owner'),
        acl: parseAcl(r.acl ?? null),
        dependsOn: [] as ObjectRef[],
      };
      let model: TypeModel | undefined;
      switch (typtype) {
        case 'e':
          model = { kind: 'enum', ...common, labels: enumLabels.get(oid) ?? [] } as EnumTypeModel;
          break;
        case 'd': {
          const d: DomainTypeModel = {
            kind: 'domain',
            ...common,
            baseType: s(r, 'base_type'),
            notNull: bool(r, 'typnotnull'),
            constraints: domainConstraints.get(oid) ?? [],
          };
          setOpt(d, 'collation', r.collation);
          setOpt(d, 'default', r.typdefault);
          model = d;
          break;
        }
        case 'c':
          if (r.relkind === 'c') {
            model = {
              kind: 'composite',
              ...common,
              attributes: attributes.get(s(r, 'typrelid')) ?? [],
            };
            this.refs.set(`pg_class:${s(r, 'typrelid')}`, ref);
          } else {
            // A table's or view's row type: it stands for the relation (resolved later).
            this.refs.set(`pg_type:${oid}`, `pending-class:${s(r, 'typrelid')}`);
          }
          break;
        case 'r': {
          const rg = ranges.get(oid);
          if (rg === undefined) break;
          const range: RangeTypeModel = {
            kind: 'range',
            ...common,
            subtype: s(rg, 'subtype'),
            multirangeSchema: s(rg, 'mschema'),
            multirangeName: s(rg, 'mname'),
          };
          setOpt(range, 'subtypeOpclass', rg.opclass);
          setOpt(range, 'collation', rg.collation);
          setOpt(range, 'canonical', rg.canonical);
          setOpt(range, 'subtypeDiff', rg.subdiff);
          aliases.push([s(rg, 'rngmultitypid'), oid]);
          if (rg.canonical !== null) {
            this.note(
              'range type',
              qualify(schema, name),
              'a range type with a canonical function needs a shell type and a C function; it cannot be recreated from SQL',
            );
          }
          model = range;
          break;
        }
        case 'm':
          break;
        case 'b':
          // Array types are recorded through their element type (the alias above).
          if (!arrayTypes.has(oid)) {
            this.note(
              'base type',
              qualify(schema, name),
              'types implemented in C are not recreated',
              `pg_type:${oid}`,
            );
          }
          break;
        default:
          this.note('type', qualify(schema, name), `types of kind '${typtype}' are not recreated`);
      }
      if (model !== undefined) {
        setOpt(model, 'comment', r.comment);
        this.refs.set(`pg_type:${oid}`, ref);
        out.push(model);
      }
    }
    for (const [alias, target] of aliases) {
      this.refs.set(`pg_type:${alias}`, `pending-type:${target}`);
    }
    return out;
  }

  private async readFunctions(): Promise<FunctionModel[]> {
    const rows = await this.q(`
      SELECT p.oid, n.nspname, p.proname, p.prokind,
        pg_get_function_identity_arguments(p.oid) AS args,
        (SELECT coalesce(string_agg(format_type(x, NULL), ',' ORDER BY o), '')
          FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS u(x, o)) AS sig,
        CASE WHEN p.prokind <> 'a' THEN pg_get_functiondef(p.oid) END AS def,
        pg_get_userbyid(p.proowner) AS owner, obj_description(p.oid, 'pg_proc') AS comment,
        ${aclJson('p.proacl')} AS acl
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE ${USER_NS} AND p.oid >= ${FIRST_NORMAL_OID} AND NOT ${internalPart('pg_proc', 'p.oid')}`);
    const out: FunctionModel[] = [];
    for (const r of rows) {
      if (this.isMember('pg_proc', s(r, 'oid'))) continue;
      const schema = s(r, 'nspname');
      const name = s(r, 'proname');
      if (r.prokind === 'a') {
        // Read with its pg_aggregate row (readAggregates); the ref resolves the same way.
        this.refs.set(`pg_proc:${s(r, 'oid')}`, functionRef(schema, name, s(r, 'sig')));
        continue;
      }
      const f: FunctionModel = {
        kind: r.prokind === 'p' ? 'procedure' : 'function',
        schema,
        name,
        identityArguments: s(r, 'args'),
        signature: s(r, 'sig'),
        definition: s(r, 'def'),
        owner: s(r, 'owner'),
        acl: parseAcl(r.acl ?? null),
        dependsOn: [],
      };
      setOpt(f, 'comment', r.comment);
      this.refs.set(`pg_proc:${s(r, 'oid')}`, functionRef(schema, name, f.signature));
      out.push(f);
    }
    return out;
  }

  private async readAggregates(): Promise<AggregateModel[]> {
    const fn = (col: string) => `CASE WHEN a.${col} <> 0 THEN a.${col}::regproc::text END`;
    const rows = await this.q(`
      SELECT p.oid, n.nspname, p.proname, a.aggkind, pg_get_function_arguments(p.oid) AS args,
        pg_get_function_identity_arguments(p.oid) AS identity_args,
        (SELECT coalesce(string_agg(format_type(x, NULL), ',' ORDER BY o), '')
          FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS u(x, o)) AS sig,
        a.aggtransfn::regproc::text AS sfunc, format_type(a.aggtranstype, NULL) AS stype,
        a.aggtransspace, ${fn('aggfinalfn')} AS finalfunc, a.aggfinalextra, a.aggfinalmodify,
        ${fn('aggcombinefn')} AS combinefunc, ${fn('aggserialfn')} AS serialfunc,
        ${fn('aggdeserialfn')} AS deserialfunc, a.agginitval,
        ${fn('aggmtransfn')} AS msfunc, ${fn('aggminvtransfn')} AS minvfunc,
        CASE WHEN a.aggmtranstype <> 0 THEN format_type(a.aggmtranstype, NULL) END AS mstype,
        a.aggmtransspace, ${fn('aggmfinalfn')} AS mfinalfunc, a.aggmfinalextra, a.aggmfinalmodify,
        a.aggminitval, CASE WHEN a.aggsortop <> 0 THEN a.aggsortop::regoper::text END AS sortop,
        p.proparallel, pg_get_userbyid(p.proowner) AS owner,
        obj_description(p.oid, 'pg_proc') AS comment, ${aclJson('p.proacl')} AS acl
      FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid
        JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE ${USER_NS} AND p.oid >= ${FIRST_NORMAL_OID}`);
    const modify: Readonly<Record<string, string>> = {
      r: 'READ_ONLY',
      s: 'SHAREABLE',
      w: 'READ_WRITE',
    };
    const parallel: Readonly<Record<string, AggregateModel['parallel']>> = {
      s: 'SAFE',
      r: 'RESTRICTED',
      u: 'UNSAFE',
    };
    const out: AggregateModel[] = [];
    for (const r of rows) {
      if (this.isMember('pg_proc', s(r, 'oid'))) continue;
      const a: AggregateModel = {
        schema: s(r, 'nspname'),
        name: s(r, 'proname'),
        kind: r.aggkind === 'o' ? 'ordered-set' : r.aggkind === 'h' ? 'hypothetical' : 'normal',
        arguments: s(r, 'args'),
        identityArguments: s(r, 'identity_args'),
        signature: s(r, 'sig'),
        sfunc: s(r, 'sfunc'),
        stype: s(r, 'stype'),
        finalfuncExtra: bool(r, 'aggfinalextra'),
        finalfuncModify: modify[s(r, 'aggfinalmodify')] ?? 'READ_ONLY',
        mfinalfuncExtra: bool(r, 'aggmfinalextra'),
        mfinalfuncModify: modify[s(r, 'aggmfinalmodify')] ?? 'READ_ONLY',
        parallel: parallel[s(r, 'proparallel')] ?? 'UNSAFE',
        owner: s(r, 'owner'),
        acl: parseAcl(r.acl ?? null),
        dependsOn: [],
      };
      if (r.aggtransspace !== '0') setOpt(a, 'sspace', Number(r.aggtransspace));
      if (r.aggmtransspace !== '0') setOpt(a, 'msspace', Number(r.aggmtransspace));
      setOpt(a, 'finalfunc', r.finalfunc);
      setOpt(a, 'combinefunc', r.combinefunc);
      setOpt(a, 'serialfunc', r.serialfunc);
      setOpt(a, 'deserialfunc', r.deserialfunc);
      setOpt(a, 'initcond', r.agginitval);
      setOpt(a, 'msfunc', r.msfunc);
      setOpt(a, 'minvfunc', r.minvfunc);
      setOpt(a, 'mstype', r.mstype);
      setOpt(a, 'mfinalfunc', r.mfinalfunc);
      setOpt(a, 'minitcond', r.aggminitval);
      setOpt(a, 'sortop', r.sortop);
      setOpt(a, 'comment', r.comment);
      out.push(a);
    }
    return out;
  }

  /** Every relation in user schemas, for the OID maps; details are read per kind. */
  private relRows: Row[] = [];

  private async readRelations(): Promise<void> {
    this.relRows = await this.q(`
      SELECT c.oid, n.nspname, c.relname, c.relkind, c.relpersistence, c.relispartition,
        pg_get_userbyid(c.relowner) AS owner, obj_description(c.oid, 'pg_class') AS comment,
        ${aclJson('c.relacl')} AS acl,
        -- TOAST storage parameters live on the TOAST table; CREATE TABLE takes them as toast.*.
        to_json(coalesce(c.reloptions, '{}') || coalesce((SELECT array_agg('toast.' || o)
          FROM pg_class t, unnest(t.reloptions) AS o WHERE t.oid = c.reltoastrelid), '{}'))::text
          AS options,
        c.relrowsecurity, c.relforcerowsecurity, c.relreplident, c.reltablespace <> 0 AS in_tablespace,
        am.amname, c.reloftype <> 0 AS typed, c.relispopulated,
        CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partkey,
        CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END AS bound
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_am am ON am.oid = c.relam
      WHERE ${USER_NS} AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c', 'i', 'I')`);
    const kindRef: Readonly<Record<string, 'table' | 'view' | 'sequence' | 'index'>> = {
      r: 'table',
      p: 'table',
      v: 'view',
      m: 'view',
      S: 'sequence',
      i: 'index',
      I: 'index',
    };
    for (const r of this.relRows) {
      const oid = s(r, 'oid');
      if (this.isMember('pg_class', oid)) continue;
      const schema = s(r, 'nspname');
      const name = s(r, 'relname');
      const kind = s(r, 'relkind');
      const refKindOf = kindRef[kind];
      if (kind === 'f') {
        this.note(
          'foreign table',
          qualify(schema, name),
          'foreign tables (and their servers) are not recreated',
          `pg_class:${oid}`,
        );
        continue;
      }
      if (refKindOf === undefined) continue;
      const ref = qualifiedRef(refKindOf, schema, name);
      this.rels.set(oid, { schema, name, kind, ref });
      this.refs.set(`pg_class:${oid}`, ref);
      if (r.in_tablespace === 't') {
        this.note(
          'tablespace placement',
          qualify(schema, name),
          'the object is in a non-default tablespace; it is restored into the default tablespace',
        );
      }
    }
  }

  private relRowsOfKind(kinds: string): Row[] {
    return this.relRows.filter(
      (r) => kinds.includes(s(r, 'relkind')) && this.rels.has(s(r, 'oid')),
    );
  }

  private async readSequences(): Promise<SequenceModel[]> {
    const rows = this.relRowsOfKind('S');
    if (rows.length === 0) return [];
    const params = new Map<string, Row>();
    for (const r of await this.q(`
      SELECT seqrelid, format_type(seqtypid, NULL) AS type, seqstart, seqincrement, seqmax, seqmin,
        seqcache, seqcycle FROM pg_sequence`)) {
      params.set(s(r, 'seqrelid'), r);
    }
    const owners = new Map<string, Row>();
    for (const r of await this.q(`
      SELECT d.objid, d.deptype, n.nspname, c.relname, a.attname
      FROM pg_depend d JOIN pg_class c ON c.oid = d.refobjid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
      WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
        AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
        AND d.objid IN (SELECT seqrelid FROM pg_sequence)`)) {
      owners.set(s(r, 'objid'), r);
    }
    const values = await this.readSequenceValues(rows);
    const out: SequenceModel[] = [];
    rows.forEach((r, i) => {
      const oid = s(r, 'oid');
      const p = params.get(oid);
      const v = values[i];
      if (p === undefined || v === undefined) return;
      const seq: SequenceModel = {
        schema: s(r, 'nspname'),
        name: s(r, 'relname'),
        lastValue: v.lastValue,
        isCalled: v.isCalled,
        dataType: s(p, 'type'),
        start: s(p, 'seqstart'),
        increment: s(p, 'seqincrement'),
        min: s(p, 'seqmin'),
        max: s(p, 'seqmax'),
        cache: s(p, 'seqcache'),
        cycle: bool(p, 'seqcycle'),
        unlogged: r.relpersistence === 'u',
        owner: s(r, 'owner'),
        acl: parseAcl(r.acl ?? null),
        dependsOn: [],
      };
      const own = owners.get(oid);
      if (own !== undefined) {
        const link = {
          schema: s(own, 'nspname'),
          table: s(own, 'relname'),
          column: s(own, 'attname'),
        };
        if (own.deptype === 'i') seq.identityOf = link;
        else seq.ownedBy = link;
      }
      setOpt(seq, 'comment', r.comment);
      out.push(seq);
    });
    return out;
  }

  /** Current values, read from each sequence (non-transactional, as pg_dump reads them). */
  private async readSequenceValues(
    rows: Row[],
  ): Promise<Array<{ lastValue: string; isCalled: boolean }>> {
    const out: Array<{ lastValue: string; isCalled: boolean }> = [];
    const batch = 200;
    for (let i = 0; i < rows.length; i += batch) {
      const part = rows.slice(i, i + batch);
      const text = part
        .map(
          (r, j) =>
            `SELECT ${j} AS i, last_value::text AS v, is_called FROM ${qualify(s(r, 'nspname'), s(r, 'relname'))}`,
        )
        .join(' UNION ALL ');
      const result = await this.q(`${text} ORDER BY i`);
      for (const r of result) out.push({ lastValue: s(r, 'v'), isCalled: bool(r, 'is_called') });
    }
    return out;
  }

  /** Columns of relations (tables, views, materialized views), by relation OID. */
  private columnRows = new Map<string, Row[]>();

  private async readColumns(): Promise<void> {
    const rows = await this.q(`
      SELECT a.attrelid, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type,
        a.attnotnull, pg_get_expr(d.adbin, d.adrelid) AS def, a.attidentity, a.attgenerated,
        CASE WHEN a.attcollation <> t.typcollation THEN ${collationName('a.attcollation')} END AS collation,
        a.attislocal, a.attstattarget, a.attstorage, t.typstorage, a.attcompression,
        to_json(a.attoptions)::text AS options, col_description(a.attrelid, a.attnum) AS comment,
        ${aclJson('a.attacl')} AS acl
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE ${USER_NS} AND c.relkind IN ('r', 'p', 'v', 'm') AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attrelid, a.attnum`);
    for (const r of rows) {
      const list = this.columnRows.get(s(r, 'attrelid')) ?? [];
      list.push(r);
      this.columnRows.set(s(r, 'attrelid'), list);
    }
    for (const r of await this.q(`SELECT oid, adrelid FROM pg_attrdef`)) {
      this.refs.set(`pg_attrdef:${s(r, 'oid')}`, `pending-class:${s(r, 'adrelid')}`);
    }
  }

  private async readTables(): Promise<TableModel[]> {
    await this.readColumns();
    const rows = this.relRowsOfKind('rp');
    const checks = new Map<string, CheckConstraintModel[]>();
    for (const r of await this.q(`
      SELECT oid, conrelid, conname, pg_get_constraintdef(oid) AS def, convalidated, conislocal,
        obj_description(oid, 'pg_constraint') AS comment
      FROM pg_constraint WHERE contype = 'c' AND conrelid <> 0 ORDER BY conname`)) {
      const rel = s(r, 'conrelid');
      const list = checks.get(rel) ?? [];
      const c: CheckConstraintModel = {
        name: s(r, 'conname'),
        definition: s(r, 'def'),
        validated: bool(r, 'convalidated'),
        local: bool(r, 'conislocal'),
      };
      setOpt(c, 'comment', r.comment);
      list.push(c);
      checks.set(rel, list);
      this.refs.set(`pg_constraint:${s(r, 'oid')}`, `pending-class:${rel}`);
    }
    // From PostgreSQL 18 a NOT NULL is a named constraint row.
    const notNulls = new Map<string, Row>();
    if (this.version >= 180000) {
      for (const r of await this.q(`
        SELECT oid, conrelid, conkey[1] AS attnum, conname, connoinherit, convalidated, conislocal,
          obj_description(oid, 'pg_constraint') AS comment
        FROM pg_constraint WHERE contype = 'n' AND conrelid <> 0`)) {
        notNulls.set(`${s(r, 'conrelid')}:${s(r, 'attnum')}`, r);
        this.refs.set(`pg_constraint:${s(r, 'oid')}`, `pending-class:${s(r, 'conrelid')}`);
      }
    }
    const parents = new Map<string, Array<{ oid: string; partition: boolean }>>();
    for (const r of await this.q(`
      SELECT i.inhrelid, i.inhparent, c.relispartition FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relkind IN ('r', 'p', 'f')
      ORDER BY i.inhrelid, i.inhseqno`)) {
      const list = parents.get(s(r, 'inhrelid')) ?? [];
      list.push({ oid: s(r, 'inhparent'), partition: bool(r, 'relispartition') });
      parents.set(s(r, 'inhrelid'), list);
    }
    const keys = new Map<
      string,
      { primary: string[] | null; replica: string[] | null; replicaIndex?: string }
    >();
    for (const r of await this.q(`
      SELECT i.indrelid, ic.relname, i.indisprimary, i.indisreplident,
        (SELECT json_agg(a.attname ORDER BY k.o)::text
          FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, o)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
          WHERE k.o <= i.indnkeyatts) AS cols
      FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
      WHERE i.indisprimary OR i.indisreplident`)) {
      const entry = keys.get(s(r, 'indrelid')) ?? { primary: null, replica: null };
      const cols = JSON.parse(r.cols ?? '[]') as string[];
      if (bool(r, 'indisprimary')) entry.primary = cols;
      if (bool(r, 'indisreplident')) {
        entry.replica = cols;
        entry.replicaIndex = s(r, 'relname');
      }
      keys.set(s(r, 'indrelid'), entry);
    }

    const out: TableModel[] = [];
    for (const r of rows) {
      const oid = s(r, 'oid');
      const schema = s(r, 'nspname');
      const name = s(r, 'relname');
      const partitioned = r.relkind === 'p';
      const columns = (this.columnRows.get(oid) ?? []).map((c) =>
        this.column(c, notNulls.get(`${oid}:${s(c, 'attnum')}`)),
      );
      const key = keys.get(oid);
      const replident = s(r, 'relreplident');
      const t: TableModel = {
        schema,
        name,
        kind: partitioned ? 'partitioned' : 'table',
        unlogged: r.relpersistence === 'u',
        columns,
        primaryKey: key?.primary ?? null,
        replicaIdentityKey: replident === 'i' ? (key?.replica ?? null) : null,
        hasData: !partitioned,
        inherits: [],
        checks: checks.get(oid) ?? [],
        replicaIdentity:
          replident === 'n'
            ? 'nothing'
            : replident === 'f'
              ? 'full'
              : replident === 'i'
                ? 'index'
                : 'default',
        rowSecurity: bool(r, 'relrowsecurity'),
        forceRowSecurity: bool(r, 'relforcerowsecurity'),
        options: JSON.parse(s(r, 'options')) as string[],
        owner: s(r, 'owner'),
        acl: parseAcl(r.acl ?? null),
        dependsOn: [],
      };
      if (replident === 'i' && key?.replicaIndex !== undefined)
        t.replicaIdentityIndex = key.replicaIndex;
      setOpt(t, 'partitionKey', r.partkey);
      setOpt(t, 'comment', r.comment);
      for (const p of parents.get(oid) ?? []) {
        const parent = this.rels.get(p.oid);
        if (parent === undefined) continue;
        if (p.partition) {
          t.partitionOf = { schema: parent.schema, name: parent.name, bound: s(r, 'bound') };
        } else {
          t.inherits.push({ schema: parent.schema, name: parent.name });
        }
      }
      if (r.typed === 't') {
        this.note(
          'typed table',
          qualify(schema, name),
          'the table is restored with its columns but without its OF type link',
        );
      }
      const am = r.amname;
      if (am !== null && am !== undefined && am !== 'heap') {
        this.note(
          'table access method',
          qualify(schema, name),
          `access method "${am}" is not restored; the table is created as heap`,
        );
      }
      out.push(t);
    }
    return out;
  }

  /** Children whose column order CREATE TABLE ... INHERITS cannot give (see inheritance.ts). */
  private noteInheritanceOrder(tables: TableModel[]): void {
    const byKey = new Map(tables.map((t) => [`${t.schema}\u0000${t.name}`, t]));
    for (const t of tables) {
      if (t.inherits.length === 0) continue;
      if (inheritsKeepsOrder(t, (schema, name) => byKey.get(`${schema}\u0000${name}`))) continue;
      this.note(
        'inherited column order',
        qualify(t.schema, t.name),
        'a parent gained columns after this table inherited from it; the table is restored with its column order and then attached to its parent, which makes its inherited columns and constraints its own too (dropping one from the parent will no longer drop it here)',
      );
    }
  }

  private column(r: Row, notNull: Row | undefined): ColumnModel {
    const c: ColumnModel = {
      name: s(r, 'attname'),
      type: s(r, 'type'),
      notNull: bool(r, 'attnotnull'),
    };
    const generated = s(r, 'attgenerated');
    if (generated === '') {
      setOpt(c, 'default', r.def);
    } else {
      c.generated = s(r, 'def');
      if (generated === 'v') c.generatedKind = 'virtual';
    }
    if (r.attidentity === 'a') c.identity = 'always';
    if (r.attidentity === 'd') c.identity = 'by-default';
    setOpt(c, 'collation', r.collation);
    if (notNull !== undefined) {
      const nn: NonNullable<ColumnModel['notNullConstraint']> = {
        name: s(notNull, 'conname'),
        noInherit: bool(notNull, 'connoinherit'),
        validated: bool(notNull, 'convalidated'),
        local: bool(notNull, 'conislocal'),
      };
      setOpt(nn, 'comment', notNull.comment);
      c.notNullConstraint = nn;
    }
    if (r.attislocal === 'f') c.inheritedOnly = true;
    // Before 17 "default" is -1; from 17 it is NULL.
    const stat = r.attstattarget;
    if (stat !== null && stat !== undefined && Number(stat) >= 0) c.statistics = Number(stat);
    if (r.attstorage !== r.typstorage) setOpt(c, 'storage', STORAGE[s(r, 'attstorage')]);
    if (r.attcompression === 'p') c.compression = 'pglz';
    if (r.attcompression === 'l') c.compression = 'lz4';
    if (r.options !== null && r.options !== undefined && r.options !== 'null') {
      c.options = JSON.parse(r.options) as string[];
    }
    setOpt(c, 'comment', r.comment);
    const acl = parseAcl(r.acl ?? null);
    if (acl !== null) c.acl = acl;
    return c;
  }

  private async readViews(): Promise<ViewModel[]> {
    const rows = this.relRowsOfKind('vm');
    const defs = new Map<string, string>();
    if (rows.length > 0) {
      for (const r of await this.q(`
        SELECT c.oid, pg_get_viewdef(c.oid) AS def FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE ${USER_NS} AND c.relkind IN ('v', 'm')`)) {
        defs.set(s(r, 'oid'), s(r, 'def'));
      }
    }
    for (const r of await this.q(
      `SELECT oid, ev_class FROM pg_rewrite WHERE rulename = '_RETURN'`,
    )) {
      this.refs.set(`pg_rewrite:${s(r, 'oid')}`, `pending-class:${s(r, 'ev_class')}`);
    }
    const out: ViewModel[] = [];
    for (const r of rows) {
      const oid = s(r, 'oid');
      const columns = (this.columnRows.get(oid) ?? []).map((c) => {
        const col: ViewColumnModel = { name: s(c, 'attname'), type: s(c, 'type') };
        setOpt(col, 'default', c.def);
        setOpt(col, 'comment', c.comment);
        const acl = parseAcl(c.acl ?? null);
        if (acl !== null) col.acl = acl;
        return col;
      });
      const v: ViewModel = {
        kind: r.relkind === 'm' ? 'materialized' : 'view',
        schema: s(r, 'nspname'),
        name: s(r, 'relname'),
        definition: defs.get(oid) ?? '',
        options: JSON.parse(s(r, 'options')) as string[],
        columns,
        populated: r.relkind === 'm' && bool(r, 'relispopulated'),
        owner: s(r, 'owner'),
        acl: parseAcl(r.acl ?? null),
        dependsOn: [],
      };
      setOpt(v, 'comment', r.comment);
      out.push(v);
    }
    return out;
  }

  private async readConstraintsAndIndexes(): Promise<{
    constraints: ConstraintModel[];
    indexes: IndexModel[];
  }> {
    const indexRows = await this.q(`
      SELECT i.indexrelid, i.indrelid, pg_get_indexdef(i.indexrelid) AS def, i.indisclustered,
        i.indisvalid, ic.relkind,
        (SELECT inhparent FROM pg_inherits WHERE inhrelid = i.indexrelid) AS parent,
        obj_description(i.indexrelid, 'pg_class') AS comment,
        (SELECT json_agg(json_build_array(a.attnum, a.attstattarget) ORDER BY a.attnum)::text
          FROM pg_attribute a WHERE a.attrelid = i.indexrelid AND a.attstattarget >= 0) AS stats,
        (SELECT co.oid FROM pg_constraint co WHERE co.conindid = i.indexrelid
          AND co.contype IN ('p', 'u', 'x') AND co.conrelid = i.indrelid) AS conoid
      FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid`);
    const byIndex = new Map<string, Row>();
    for (const r of indexRows) byIndex.set(s(r, 'indexrelid'), r);
    const parentIndex = (r: Row | undefined): { schema: string; name: string } | undefined => {
      if (r?.parent === null || r?.parent === undefined) return undefined;
      const p = this.rels.get(r.parent);
      return p === undefined ? undefined : { schema: p.schema, name: p.name };
    };

    const constraints: ConstraintModel[] = [];
    const types: Readonly<Record<string, ConstraintModel['type']>> = {
      p: 'primary-key',
      u: 'unique',
      x: 'exclusion',
      f: 'foreign-key',
    };
    for (const r of await this.q(`
      SELECT co.oid, co.conrelid, co.conname, co.contype, pg_get_constraintdef(co.oid) AS def,
        co.conindid, co.conparentid, co.confrelid, obj_description(co.oid, 'pg_constraint') AS comment
      FROM pg_constraint co WHERE co.contype IN ('p', 'u', 'x', 'f', 't') AND co.conrelid <> 0`)) {
      const rel = this.rels.get(s(r, 'conrelid'));
      if (rel === undefined) continue;
      const name = s(r, 'conname');
      const contype = s(r, 'contype');
      if (contype === 't') {
        // A constraint trigger's constraint row: the trigger (pg_trigger) recreates both.
        this.refs.set(
          `pg_constraint:${s(r, 'oid')}`,
          tableObjectRef('trigger', rel.schema, rel.name, name),
        );
        continue;
      }
      const ref = tableObjectRef('constraint', rel.schema, rel.name, name);
      this.refs.set(`pg_constraint:${s(r, 'oid')}`, ref);
      // Foreign keys cloned onto partitions (or for referenced partitions) come with the parent's.
      if (contype === 'f' && r.conparentid !== '0') continue;
      const type = types[contype];
      if (type === undefined) continue;
      const c: ConstraintModel = {
        schema: rel.schema,
        table: rel.name,
        name,
        type,
        definition: s(r, 'def'),
        dependsOn: [],
      };
      if (type === 'foreign-key') {
        const target = this.rels.get(s(r, 'confrelid'));
        if (target !== undefined) c.references = { schema: target.schema, name: target.name };
      } else {
        const idx = byIndex.get(s(r, 'conindid'));
        const parent = parentIndex(idx);
        if (parent !== undefined) c.parentIndex = parent;
        if (idx?.indisclustered === 't') c.clustered = true;
        this.refs.set(`pg_class:${s(r, 'conindid')}`, ref);
      }
      setOpt(c, 'comment', r.comment);
      constraints.push(c);
    }

    const indexes: IndexModel[] = [];
    for (const r of indexRows) {
      const oid = s(r, 'indexrelid');
      const idx = this.rels.get(oid);
      const table = this.rels.get(s(r, 'indrelid'));
      if (idx === undefined || table === undefined || r.conoid !== null) continue;
      if (r.indisvalid !== 't' && r.relkind !== 'I') {
        this.note(
          'invalid index',
          qualify(idx.schema, idx.name),
          'the index is invalid (a failed CREATE INDEX CONCURRENTLY?); it is not restored',
        );
        continue;
      }
      const model: IndexModel = {
        schema: idx.schema,
        name: idx.name,
        table: table.name,
        definition: s(r, 'def'),
        dependsOn: [],
      };
      const parent = parentIndex(r);
      if (parent !== undefined) model.parentIndex = parent;
      if (r.indisclustered === 't') model.clustered = true;
      if (r.stats !== null && r.stats !== undefined) {
        model.statistics = JSON.parse(r.stats) as Array<[number, number]>;
      }
      setOpt(model, 'comment', r.comment);
      indexes.push(model);
    }
    return { constraints, indexes };
  }

  private async readTriggers(): Promise<TriggerModel[]> {
    const out: TriggerModel[] = [];
    for (const r of await this.q(`
      SELECT t.oid, t.tgrelid, t.tgname, pg_get_triggerdef(t.oid) AS def, t.tgenabled,
        obj_description(t.oid, 'pg_trigger') AS comment
      FROM pg_trigger t WHERE NOT t.tgisinternal AND t.tgparentid = 0`)) {
      const rel = this.rels.get(s(r, 'tgrelid'));
      if (rel === undefined) continue;
      const t: TriggerModel = {
        schema: rel.schema,
        table: rel.name,
        name: s(r, 'tgname'),
        definition: s(r, 'def'),
        enabled: enabledState(s(r, 'tgenabled')),
        dependsOn: [],
      };
      setOpt(t, 'comment', r.comment);
      this.refs.set(
        `pg_trigger:${s(r, 'oid')}`,
        tableObjectRef('trigger', t.schema, t.table, t.name),
      );
      out.push(t);
    }
    return out;
  }

  private async readRules(): Promise<RuleModel[]> {
    const out: RuleModel[] = [];
    for (const r of await this.q(`
      SELECT r.oid, r.ev_class, r.rulename, pg_get_ruledef(r.oid) AS def, r.ev_enabled,
        obj_description(r.oid, 'pg_rewrite') AS comment
      FROM pg_rewrite r WHERE r.rulename <> '_RETURN'`)) {
      const rel = this.rels.get(s(r, 'ev_class'));
      if (rel === undefined) continue;
      const rule: RuleModel = {
        schema: rel.schema,
        table: rel.name,
        name: s(r, 'rulename'),
        definition: s(r, 'def'),
        enabled: enabledState(s(r, 'ev_enabled')),
        dependsOn: [],
      };
      setOpt(rule, 'comment', r.comment);
      this.refs.set(
        `pg_rewrite:${s(r, 'oid')}`,
        tableObjectRef('rule', rule.schema, rule.table, rule.name),
      );
      out.push(rule);
    }
    return out;
  }

  private async readPolicies(): Promise<PolicyModel[]> {
    const out: PolicyModel[] = [];
    for (const r of await this.q(`
      SELECT p.oid, p.polrelid, p.polname, p.polpermissive, p.polcmd,
        (SELECT json_agg(CASE WHEN x = 0 THEN NULL ELSE pg_get_userbyid(x) END)::text
          FROM unnest(p.polroles) AS x) AS roles,
        pg_get_expr(p.polqual, p.polrelid) AS qual, pg_get_expr(p.polwithcheck, p.polrelid) AS wc,
        obj_description(p.oid, 'pg_policy') AS comment
      FROM pg_policy p`)) {
      const rel = this.rels.get(s(r, 'polrelid'));
      if (rel === undefined) continue;
      const roles = JSON.parse(r.roles ?? '[]') as Array<string | null>;
      roles.sort((a, b) => compare(a ?? '', b ?? ''));
      const p: PolicyModel = {
        schema: rel.schema,
        table: rel.name,
        name: s(r, 'polname'),
        permissive: bool(r, 'polpermissive'),
        command: POLICY_COMMAND[s(r, 'polcmd')] ?? 'ALL',
        roles,
        dependsOn: [],
      };
      setOpt(p, 'using', r.qual);
      setOpt(p, 'withCheck', r.wc);
      setOpt(p, 'comment', r.comment);
      this.refs.set(
        `pg_policy:${s(r, 'oid')}`,
        tableObjectRef('policy', p.schema, p.table, p.name),
      );
      out.push(p);
    }
    return out;
  }

  private async readStatistics(): Promise<StatisticsModel[]> {
    const out: StatisticsModel[] = [];
    for (const r of await this.q(`
      SELECT s.oid, n.nspname, s.stxname, s.stxrelid, pg_get_statisticsobjdef(s.oid) AS def,
        s.stxstattarget, pg_get_userbyid(s.stxowner) AS owner,
        obj_description(s.oid, 'pg_statistic_ext') AS comment
      FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace WHERE ${USER_NS}`)) {
      const rel = this.rels.get(s(r, 'stxrelid'));
      if (rel === undefined || this.isMember('pg_statistic_ext', s(r, 'oid'))) continue;
      const st: StatisticsModel = {
        schema: s(r, 'nspname'),
        name: s(r, 'stxname'),
        table: { schema: rel.schema, name: rel.name },
        definition: s(r, 'def'),
        owner: s(r, 'owner'),
        dependsOn: [],
      };
      const target = r.stxstattarget;
      if (target !== null && target !== undefined && Number(target) >= 0)
        st.target = Number(target);
      setOpt(st, 'comment', r.comment);
      this.refs.set(
        `pg_statistic_ext:${s(r, 'oid')}`,
        qualifiedRef('statistics', st.schema, st.name),
      );
      out.push(st);
    }
    return out;
  }

  /** Object kinds that are not modelled: each one present is named with a reason. */
  private async readUnsupported(): Promise<void> {
    const ns = (col: string) =>
      `(SELECT quote_ident(nspname) FROM pg_namespace WHERE oid = ${col}) || '.'`;
    const rows = await this.q(`
      SELECT 'pg_operator' AS cls, o.oid, 'operator' AS kind, o.oid::regoperator::text AS name
        FROM pg_operator o WHERE o.oid >= ${FIRST_NORMAL_OID}
      UNION ALL SELECT 'pg_opclass', c.oid, 'operator class',
        ${ns('c.opcnamespace')} || quote_ident(c.opcname) || ' USING ' || a.amname
        FROM pg_opclass c JOIN pg_am a ON a.oid = c.opcmethod WHERE c.oid >= ${FIRST_NORMAL_OID}
      UNION ALL SELECT 'pg_opfamily', f.oid, 'operator family',
        ${ns('f.opfnamespace')} || quote_ident(f.opfname) || ' USING ' || a.amname
        FROM pg_opfamily f JOIN pg_am a ON a.oid = f.opfmethod WHERE f.oid >= ${FIRST_NORMAL_OID}
      UNION ALL SELECT 'pg_cast', c.oid, 'cast',
        '(' || format_type(c.castsource, NULL) || ' AS ' || format_type(c.casttarget, NULL) || ')'
        FROM pg_cast c WHERE c.oid >= ${FIRST_NORMAL_OID} AND NOT ${internalPart('pg_cast', 'c.oid')}
      UNION ALL SELECT 'pg_conversion', c.oid, 'conversion', ${ns('c.connamespace')} || quote_ident(c.conname)
        FROM pg_conversion c WHERE c.oid >= ${FIRST_NORMAL_OID}
      UNION ALL SELECT 'pg_ts_config', c.oid, 'text search configuration', ${ns('c.cfgnamespace')} || quote_ident(c.cfgname)
        FROM pg_ts_config c WHERE c.oid >= ${FIRST_NORMAL_OID}
      UNION ALL SELECT 'pg_ts_dict', c.oid, 'text search dictionary', ${ns('c.dictnamespace')} || quote_ident(c.dictname)
        FROM pg_ts_dict c WHERE c.oid >= ${FIRST_NORMAL_OID}
      UNION ALL SELECT 'pg_ts_parser', c.oid, 'text search parser', ${ns('c.prsnamespace')} || quote_ident(c.prsname)
        FROM pg_ts_parser c WHERE c.oid >= ${FIRST_NORMAL_OID}
      UNION ALL SELECT 'pg_ts_template', c.oid, 'text search template', ${ns('c.tmplnamespace')} || quote_ident(c.tmplname)
        FROM pg_ts_template c WHERE c.oid >= ${FIRST_NORMAL_OID}
      UNION ALL SELECT 'pg_transform', t.oid, 'transform',
        'for ' || format_type(t.trftype, NULL) || ' language ' || l.lanname
        FROM pg_transform t JOIN pg_language l ON l.oid = t.trflang WHERE t.oid >= ${FIRST_NORMAL_OID}
      UNION ALL SELECT 'pg_language', l.oid, 'language', quote_ident(l.lanname)
        FROM pg_language l WHERE l.oid >= ${FIRST_NORMAL_OID}
      UNION ALL SELECT 'pg_am', a.oid, 'access method', quote_ident(a.amname)
        FROM pg_am a WHERE a.oid >= ${FIRST_NORMAL_OID}
      UNION ALL SELECT 'pg_event_trigger', e.oid, 'event trigger', quote_ident(e.evtname)
        FROM pg_event_trigger e
        WHERE e.evtfoid NOT IN (SELECT p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                                 WHERE n.nspname = '_flashback')
      UNION ALL SELECT 'pg_publication', p.oid, 'publication', quote_ident(p.pubname)
        FROM pg_publication p WHERE p.pubname <> ${quoteLiteral(DEFAULT_PUBLICATION)} -- (capture's own)
      UNION ALL SELECT 'pg_subscription', s.oid, 'subscription', quote_ident(s.subname)
        FROM pg_subscription s
        WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
      UNION ALL SELECT 'pg_foreign_data_wrapper', w.oid, 'foreign-data wrapper', quote_ident(w.fdwname)
        FROM pg_foreign_data_wrapper w
      UNION ALL SELECT 'pg_foreign_server', s.oid, 'foreign server', quote_ident(s.srvname)
        FROM pg_foreign_server s
      UNION ALL SELECT 'pg_user_mapping', m.umid, 'user mapping',
        'for ' || quote_ident(m.usename) || ' server ' || quote_ident(m.srvname)
        FROM pg_user_mappings m
      UNION ALL SELECT 'pg_default_acl', d.oid, 'default privileges',
        'for role ' || quote_ident(pg_get_userbyid(d.defaclrole))
          || coalesce(' in schema ' || (SELECT quote_ident(nspname) FROM pg_namespace WHERE oid = d.defaclnamespace), '')
          || ' on ' || d.defaclobjtype::text
        FROM pg_default_acl d
      UNION ALL SELECT 'pg_largeobject_metadata', 0, 'large objects', count(*)::text || ' large object(s)'
        FROM pg_largeobject_metadata HAVING count(*) > 0
      UNION ALL SELECT 'pg_seclabel', 0, 'security label', objtype || ' ' || objname
        FROM pg_seclabels WHERE objtype NOT IN ('role', 'database', 'tablespace')
      UNION ALL SELECT 'pg_db_role_setting', 0, 'role setting in database',
        'for role ' || quote_ident(pg_get_userbyid(rs.setrole)) || ': ' || x
        FROM pg_db_role_setting rs, unnest(rs.setconfig) x
        WHERE rs.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND rs.setrole <> 0
      UNION ALL SELECT 'pg_depend', d.objid, 'extension dependency',
        pg_describe_object(d.classid, d.objid, d.objsubid) || ' depends on extension '
          || (SELECT quote_ident(extname) FROM pg_extension WHERE oid = d.refobjid)
        FROM pg_depend d WHERE d.deptype = 'x'`);
    const reasons: Readonly<Record<string, string>> = {
      operator: 'user-defined operators are not recreated',
      'operator class': 'user-defined operator classes are not recreated',
      'operator family': 'user-defined operator families are not recreated',
      cast: 'user-defined casts are not recreated',
      conversion: 'user-defined encoding conversions are not recreated',
      'text search configuration': 'text search configurations are not recreated',
      'text search dictionary': 'text search dictionaries are not recreated',
      'text search parser': 'text search parsers are not recreated',
      'text search template': 'text search templates are not recreated',
      transform: 'transforms are not recreated',
      language: 'procedural languages not installed by an extension are not recreated',
      'access method': 'access methods not installed by an extension are not recreated',
      'event trigger': 'event triggers are not recreated',
      publication: 'publications are not recreated',
      subscription: 'subscriptions are not recreated',
      'foreign-data wrapper':
        'foreign-data wrappers not installed by an extension are not recreated',
      'foreign server': 'foreign servers are not recreated',
      'user mapping': 'user mappings are not recreated',
      'default privileges': 'ALTER DEFAULT PRIVILEGES settings are not recreated',
      'large objects': 'large objects are not backed up',
      'security label': 'security labels are not recreated',
      'role setting in database':
        'ALTER ROLE ... IN DATABASE ... SET settings are not recreated (roles are cluster-wide, not in a snapshot)',
      'extension dependency': 'DEPENDS ON EXTENSION marks are not recreated',
    };
    for (const r of rows) {
      // (Members of an extension come with it; text search objects on built-in parts are modelled.)
      if (this.isMember(s(r, 'cls'), s(r, 'oid')) || this.refs.has(`${s(r, 'cls')}:${s(r, 'oid')}`))
        continue;
      const kind = s(r, 'kind');
      const oid = s(r, 'oid');
      this.note(
        kind,
        s(r, 'name'),
        reasons[kind] ?? 'not recreated',
        oid === '0' ? undefined : `${s(r, 'cls')}:${oid}`,
      );
    }
  }

  /**
   * pg_depend edges between model objects. Sub-objects (defaults, check
   * constraints, a view's rewrite rule, row and array types) stand for the
   * object they belong to; edges to built-in objects are dropped, and edges
   * to extension members become edges to the extension.
   */
  private async readDependencies(): Promise<void> {
    const rows = await this.q(`
      SELECT d.classid::regclass::text AS cls, d.objid, d.refclassid::regclass::text AS refcls,
        d.refobjid, d.deptype
      FROM pg_depend d
      WHERE d.deptype IN ('n', 'a') AND d.objid >= ${FIRST_NORMAL_OID}
        AND d.refobjid >= ${FIRST_NORMAL_OID}`);
    for (const r of rows) {
      const cls = s(r, 'cls');
      const objid = s(r, 'objid');
      if (this.isMember(cls, objid)) continue;
      const from = this.resolve(`${cls}:${objid}`);
      const needed = this.notRecreated.get(`${s(r, 'refcls')}:${s(r, 'refobjid')}`);
      if (needed !== undefined && from !== undefined) {
        const by = from.replace(':', ' ');
        const list = needed.neededBy ?? [];
        if (!list.includes(by)) list.push(by);
        needed.neededBy = list.sort();
      }
      const to = this.resolve(`${s(r, 'refcls')}:${s(r, 'refobjid')}`);
      if (from === undefined || to === undefined || from === to) continue;
      // A sequence OWNED BY a column: the table needs the sequence, not the reverse.
      if (r.deptype === 'a' && from.startsWith('sequence:') && to.startsWith('table:')) continue;
      let set = this.deps.get(from);
      if (set === undefined) {
        set = new Set();
        this.deps.set(from, set);
      }
      set.add(to);
    }
  }

  private resolve(key: string): ObjectRef | undefined {
    const member = this.members.get(key);
    if (member !== undefined) return member;
    const ref = this.refs.get(key);
    if (ref === undefined) return undefined;
    if (ref.startsWith('pending-class:')) return this.resolve(`pg_class:${ref.slice(14)}`);
    if (ref.startsWith('pending-type:')) return this.resolve(`pg_type:${ref.slice(13)}`);
    return ref;
  }
}
