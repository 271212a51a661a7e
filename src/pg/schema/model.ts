/**
 * The schema model: a database's schema read from the catalogs (read.ts),
 * stored in a backup manifest as JSON, and turned back into DDL at restore
 * time (ddl.ts).
 *
 * Plain data only. Names are stored unquoted; expressions and definitions
 * are the server's own deparsed text (pg_get_expr, pg_get_indexdef, ...),
 * read with an empty search_path so every name in them is schema-qualified.
 * Lists are sorted by name, so two reads of equal schemas are deep-equal.
 *
 * Ownership, privileges and comments sit on the object they belong to.
 * Dependencies between objects (from pg_depend) are recorded as ObjectRefs,
 * so DDL can be ordered without the source database.
 */

/** Version of this model's shape; bump on any incompatible change. */
export const SCHEMA_MODEL_VERSION = 1;

/**
 * A reference to a model object, used for dependencies: `kind:identity`
 * where identity is the quoted qualified name, e.g. `table:public."Order"`,
 * `function:public.f(integer)`, `constraint:public.t.t_pkey`. Built only by
 * the functions in refs.ts. Views and materialized views are `view:`;
 * aggregates are `function:`.
 */
export type ObjectRef = string;

/** Kinds of ObjectRef. */
export type RefKind =
  | 'schema'
  | 'extension'
  | 'collation'
  | 'tsdictionary'
  | 'tsconfig'
  | 'type'
  | 'function'
  | 'sequence'
  | 'table'
  | 'view'
  | 'constraint'
  | 'index'
  | 'trigger'
  | 'rule'
  | 'policy'
  | 'statistics';

/** One grantee's privileges from one grantor (an exploded aclitem group). */
export interface AclEntry {
  /** Role name; null for PUBLIC. */
  grantee: string | null;
  grantor: string;
  /** Privilege names as in GRANT (`SELECT`, `USAGE`, `EXECUTE`, ...), sorted. */
  privileges: string[];
  /** The subset of `privileges` held WITH GRANT OPTION, sorted. */
  grantable: string[];
}

/**
 * Privileges of an object: null means the built-in default (nothing was ever
 * granted or revoked); an array is the complete ACL, sorted by grantee then grantor.
 */
export type Acl = AclEntry[] | null;

/** What every owned object carries besides its definition. */
export interface OwnedObject {
  owner: string;
  acl: Acl;
  comment?: string;
  /** Objects this one needs to exist first (pg_depend, mapped to model objects), sorted. */
  dependsOn: ObjectRef[];
}

/** A schema (namespace). `public` is included: its owner, ACL and comment matter too. */
export interface NamespaceModel extends OwnedObject {
  name: string;
}

/** An installed extension; its member objects are not in the model (the extension recreates them). */
export interface ExtensionModel {
  name: string;
  schema: string;
  version: string;
  comment?: string;
  dependsOn: ObjectRef[];
}

/** A collation created with CREATE COLLATION. */
export interface CollationModel {
  schema: string;
  name: string;
  provider: 'libc' | 'icu' | 'builtin';
  deterministic: boolean;
  /** libc: LC_COLLATE and LC_CTYPE. */
  lcCollate?: string;
  lcCtype?: string;
  /** icu and builtin: the locale. */
  locale?: string;
  /** icu: tailoring rules (PostgreSQL 16+). */
  rules?: string;
  owner: string;
  comment?: string;
  dependsOn: ObjectRef[];
}

/** A text search dictionary (CREATE TEXT SEARCH DICTIONARY) on a built-in or extension template. */
export interface TextSearchDictionaryModel {
  schema: string;
  name: string;
  /** The template, quoted and qualified (`pg_catalog.snowball`). */
  template: string;
  /** The options as the catalog keeps them (`language = 'english', stopwords = 'english'`); absent when none. */
  options?: string;
  owner: string;
  comment?: string;
  dependsOn: ObjectRef[];
}

/** A text search configuration (CREATE TEXT SEARCH CONFIGURATION) with its mappings. */
export interface TextSearchConfigurationModel {
  schema: string;
  name: string;
  /** The parser, quoted and qualified (`pg_catalog."default"`). */
  parser: string;
  /** Per token type (the parser's alias), the dictionaries in order, quoted and qualified; sorted by token. */
  mappings: Array<{ token: string; dictionaries: string[] }>;
  owner: string;
  comment?: string;
  dependsOn: ObjectRef[];
}

/** An enum type. */
export interface EnumTypeModel extends OwnedObject {
  kind: 'enum';
  schema: string;
  name: string;
  /** Labels in sort order. */
  labels: string[];
}

/** A named CHECK (or, from PostgreSQL 17, NOT NULL) constraint on a domain. */
export interface DomainConstraintModel {
  name: string;
  /** pg_get_constraintdef text, e.g. `CHECK ((VALUE > 0))`, `NOT NULL`. */
  definition: string;
  validated: boolean;
  comment?: string;
}

/** A domain. */
export interface DomainTypeModel extends OwnedObject {
  kind: 'domain';
  schema: string;
  name: string;
  /** format_type of the base type, with its typmod. */
  baseType: string;
  /** Qualified, quoted collation when not the base type's default. */
  collation?: string;
  default?: string;
  notNull: boolean;
  /** Constraints by name. The NOT NULL constraint appears here only on servers that name it (17+). */
  constraints: DomainConstraintModel[];
}

/** An attribute of a composite type. */
export interface CompositeAttributeModel {
  name: string;
  type: string;
  collation?: string;
  comment?: string;
}

/** A stand-alone composite type (CREATE TYPE ... AS (...)). */
export interface CompositeTypeModel extends OwnedObject {
  kind: 'composite';
  schema: string;
  name: string;
  attributes: CompositeAttributeModel[];
}

/** A range type and its multirange. */
export interface RangeTypeModel extends OwnedObject {
  kind: 'range';
  schema: string;
  name: string;
  subtype: string;
  /** Qualified operator class when not the subtype's default. */
  subtypeOpclass?: string;
  collation?: string;
  /** Qualified function name. */
  canonical?: string;
  subtypeDiff?: string;
  multirangeSchema: string;
  multirangeName: string;
}

/** A user-defined type. */
export type TypeModel = EnumTypeModel | DomainTypeModel | CompositeTypeModel | RangeTypeModel;

/** A function or procedure (aggregates are AggregateModel). */
export interface FunctionModel extends OwnedObject {
  kind: 'function' | 'procedure';
  schema: string;
  name: string;
  /** pg_get_function_identity_arguments, e.g. `a integer, OUT b text`. */
  identityArguments: string;
  /** Argument types only (how pg_identify_object names it), e.g. `integer,text`. */
  signature: string;
  /** pg_get_functiondef: a complete CREATE OR REPLACE statement. */
  definition: string;
}

/**
 * An aggregate function. Fields follow CREATE AGGREGATE's options; function
 * and type names are qualified where search_path would not find them.
 */
export interface AggregateModel extends OwnedObject {
  schema: string;
  name: string;
  kind: 'normal' | 'ordered-set' | 'hypothetical';
  /** pg_get_function_arguments: `numeric`, `double precision ORDER BY anyelement`. */
  arguments: string;
  /** pg_get_function_identity_arguments, for ALTER/COMMENT/GRANT. */
  identityArguments: string;
  /** Argument types only, as for functions. */
  signature: string;
  sfunc: string;
  stype: string;
  sspace?: number;
  finalfunc?: string;
  finalfuncExtra: boolean;
  /** READ_ONLY, SHAREABLE or READ_WRITE. */
  finalfuncModify: string;
  combinefunc?: string;
  serialfunc?: string;
  deserialfunc?: string;
  initcond?: string;
  msfunc?: string;
  minvfunc?: string;
  mstype?: string;
  msspace?: number;
  mfinalfunc?: string;
  mfinalfuncExtra: boolean;
  mfinalfuncModify: string;
  minitcond?: string;
  /** Sort operator (regoper text), for MIN/MAX-like aggregates. */
  sortop?: string;
  parallel: 'SAFE' | 'RESTRICTED' | 'UNSAFE';
}

/** A sequence: its current value (`lastValue`, `isCalled`) and its definition. */
export interface SequenceModel {
  schema: string;
  name: string;
  /** Values as text (they may exceed JavaScript's safe integers). */
  lastValue: string;
  isCalled: boolean;
  dataType: string;
  start: string;
  increment: string;
  min: string;
  max: string;
  cache: string;
  cycle: boolean;
  unlogged: boolean;
  /** The column this sequence is OWNED BY (serial columns). */
  ownedBy?: { schema: string; table: string; column: string };
  /** The identity column this sequence belongs to; it is created by the table. */
  identityOf?: { schema: string; table: string; column: string };
  owner: string;
  acl: Acl;
  comment?: string;
  dependsOn: ObjectRef[];
}

/** A NOT NULL constraint as a catalog row (PostgreSQL 18+), with its name. */
export interface NotNullConstraintModel {
  name: string;
  noInherit: boolean;
  validated: boolean;
  /** False when it exists only through inheritance (conislocal). */
  local: boolean;
  comment?: string;
}

/** A table column. */
export interface ColumnModel {
  name: string;
  /** format_type(atttypid, atttypmod). */
  type: string;
  notNull: boolean;
  default?: string;
  identity?: 'always' | 'by-default';
  /** Generation expression of a generated column (stored unless `generatedKind` says virtual). */
  generated?: string;
  /** Present only for a virtual generated column (PostgreSQL 18+). */
  generatedKind?: 'virtual';
  /** Qualified, quoted collation, only when not the type's default. */
  collation?: string;
  /** PostgreSQL 18+: the named NOT NULL constraint behind `notNull`. */
  notNullConstraint?: NotNullConstraintModel;
  /** Present when the column exists only by inheritance (attislocal false). */
  inheritedOnly?: true;
  /** Statistics target, when set. */
  statistics?: number;
  /** Storage (`plain`, `external`, `extended`, `main`) when not the type's default. */
  storage?: string;
  /** Compression method when set (`pglz`, `lz4`). */
  compression?: string;
  /** Attribute options (`n_distinct=...`). */
  options?: string[];
  comment?: string;
  /** Column privileges; absent when none. */
  acl?: AclEntry[];
}

/** A table CHECK constraint (created with the table; NOT VALID ones after the data). */
export interface CheckConstraintModel {
  name: string;
  /** pg_get_constraintdef, e.g. `CHECK ((a > 0)) NO INHERIT`. */
  definition: string;
  validated: boolean;
  /** False when it exists only through inheritance (conislocal). */
  local: boolean;
  comment?: string;
}

/** A table: ordinary or partitioned. Views, materialized views and sequences are elsewhere. */
export interface TableModel {
  schema: string;
  name: string;
  kind: 'table' | 'partitioned';
  unlogged: boolean;
  /** Non-dropped columns, attnum order. */
  columns: ColumnModel[];
  /** Column names in key order. */
  primaryKey: string[] | null;
  /** Columns that identify a row when there is no primary key: replica identity index columns, else null. */
  replicaIdentityKey: string[] | null;
  /** pg_get_expr(relpartbound). */
  partitionOf?: { schema: string; name: string; bound: string };
  /** True when the table holds rows (kind 'table'); partitioned parents hold none. */
  hasData: boolean;
  /** pg_get_partkeydef, for a partitioned table, e.g. `RANGE (created_at)`. */
  partitionKey?: string;
  /** Parents by (non-partition) inheritance, in inhseqno order. */
  inherits: Array<{ schema: string; name: string }>;
  checks: CheckConstraintModel[];
  replicaIdentity: 'default' | 'nothing' | 'full' | 'index';
  /** Index name, when replicaIdentity is 'index'. */
  replicaIdentityIndex?: string;
  rowSecurity: boolean;
  forceRowSecurity: boolean;
  /** Storage parameters (reloptions), e.g. `fillfactor=70`. */
  options: string[];
  owner: string;
  acl: Acl;
  comment?: string;
  dependsOn: ObjectRef[];
}

/** A primary key, unique, exclusion or foreign-key constraint on a table. */
export interface ConstraintModel {
  schema: string;
  table: string;
  name: string;
  type: 'primary-key' | 'unique' | 'exclusion' | 'foreign-key';
  /** pg_get_constraintdef, e.g. `FOREIGN KEY (a) REFERENCES public.t(id) DEFERRABLE`. */
  definition: string;
  /** Foreign keys: the referenced table. */
  references?: { schema: string; name: string };
  /** Index-backed constraints on a partition: the parent's index this one is attached to. */
  parentIndex?: { schema: string; name: string };
  /** Index-backed: the table is clustered on this index. */
  clustered?: true;
  comment?: string;
  dependsOn: ObjectRef[];
}

/** An index not created by a constraint. */
export interface IndexModel {
  schema: string;
  name: string;
  table: string;
  /** pg_get_indexdef: a complete CREATE INDEX statement (`ON ONLY` for a partitioned table). */
  definition: string;
  /** On a partition: the parent's index this one is attached to. */
  parentIndex?: { schema: string; name: string };
  clustered?: true;
  /** Statistics targets set on expression columns: [column number, target]. */
  statistics?: Array<[number, number]>;
  comment?: string;
  dependsOn: ObjectRef[];
}

/** A column of a view or materialized view. */
export interface ViewColumnModel {
  name: string;
  type: string;
  /** A view column default (ALTER VIEW ... SET DEFAULT). */
  default?: string;
  comment?: string;
  acl?: AclEntry[];
}

/** A view or materialized view. */
export interface ViewModel extends OwnedObject {
  kind: 'view' | 'materialized';
  schema: string;
  name: string;
  /** pg_get_viewdef: the SELECT, ending in `;`. */
  definition: string;
  /** reloptions, e.g. `security_barrier=true`, `check_option=cascaded`. */
  options: string[];
  columns: ViewColumnModel[];
  /** Materialized views: whether it holds data (REFRESH after restore). */
  populated: boolean;
}

/** A trigger that is not internal (constraint triggers included) and not cloned onto a partition. */
export interface TriggerModel {
  schema: string;
  table: string;
  name: string;
  /** pg_get_triggerdef: a complete CREATE TRIGGER statement. */
  definition: string;
  enabled: 'origin' | 'disabled' | 'replica' | 'always';
  comment?: string;
  dependsOn: ObjectRef[];
}

/** A rewrite rule other than a view's _RETURN rule. */
export interface RuleModel {
  schema: string;
  table: string;
  name: string;
  /** pg_get_ruledef: a complete CREATE RULE statement ending in `;`. */
  definition: string;
  enabled: 'origin' | 'disabled' | 'replica' | 'always';
  comment?: string;
  dependsOn: ObjectRef[];
}

/** A row-level security policy. */
export interface PolicyModel {
  schema: string;
  table: string;
  name: string;
  permissive: boolean;
  command: 'ALL' | 'SELECT' | 'INSERT' | 'UPDATE' | 'DELETE';
  /** Role names; null in the list means PUBLIC. Sorted. */
  roles: Array<string | null>;
  using?: string;
  withCheck?: string;
  comment?: string;
  dependsOn: ObjectRef[];
}

/** An extended statistics object. */
export interface StatisticsModel {
  schema: string;
  name: string;
  table: { schema: string; name: string };
  /** pg_get_statisticsobjdef: a complete CREATE STATISTICS statement. */
  definition: string;
  /** Statistics target, when set. */
  target?: number;
  owner: string;
  comment?: string;
  dependsOn: ObjectRef[];
}

/** One generated statement. */
export interface DdlStatement {
  /** e.g. 'table', 'index', 'view', 'function', 'trigger', 'policy', 'comment', 'grant', 'setting'. */
  kind: string;
  /** Qualified name, for messages. */
  name: string;
  sql: string;
}

/** An object Flashback cannot reproduce; named so it never goes missing silently. */
export interface UnsupportedObject {
  kind: string;
  name: string;
  reason: string;
  /**
   * Objects of the model that need this one (pg_depend), as `kind name`
   * (`table public.t`, `index public.t_x`), sorted: a restore creating them
   * fails unless the object exists in the target first. Absent when none.
   */
  neededBy?: string[];
}

/** A database's schema. */
/**
 * The database's own properties. A restore applies them only to a
 * database it creates (`--create`), as `pg_restore --create` does; into an
 * existing database they are left as they are there.
 */
export interface DatabaseModel {
  owner: string;
  acl: Acl;
  /** CONNECTION LIMIT; -1 for none. */
  connectionLimit: number;
  /** `ALTER DATABASE ... SET` settings (for every role), as `name=value`, sorted. */
  settings: string[];
  comment?: string;
}

/** One privilege of one grantee (null: PUBLIC). */
export interface PrivilegeItem {
  grantee: string | null;
  privilege: string;
  /** WITH GRANT OPTION (grants only). */
  grantable?: boolean;
}

/**
 * Privileges changed on an object that a restore does not create, because
 * it is built in (`pg_catalog.pg_sleep`) or an extension's member
 * (`public.similarity(text, text)` of pg_trgm): what was granted and
 * revoked relative to its initial privileges (pg_init_privs, else the
 * built-in default), for grantees other than its owner. Grantors are not
 * kept: the restoring role grants.
 */
export interface InitialPrivilegesChange {
  /** What GRANT names: ROUTINE, TABLE, SEQUENCE, TYPE, SCHEMA or LANGUAGE. */
  kind: string;
  /** The object as GRANT takes it, schema-qualified where it has a schema. */
  name: string;
  /** The extension it belongs to (granted after it is created); absent when built in. */
  extension?: string;
  grants: PrivilegeItem[];
  revokes: PrivilegeItem[];
}

export interface SchemaModel {
  version: 1;
  /** server_version_num of the source, e.g. 170010. */
  serverVersionNum: number;
  /** Every non-system schema, `public` included. */
  schemas: NamespaceModel[];
  /** Installed extensions (not their member objects). */
  extensions: ExtensionModel[];
  collations: CollationModel[];
  /** Enums, domains, composite and range types. */
  types: TypeModel[];
  /** Functions and procedures. */
  functions: FunctionModel[];
  aggregates: AggregateModel[];
  /** Ordinary and partitioned tables, partitions included. */
  tables: TableModel[];
  /** Every sequence, including those behind serial and identity columns. */
  sequences: SequenceModel[];
  /** Primary key, unique, exclusion and foreign-key constraints (checks are on the table). */
  constraints: ConstraintModel[];
  /** Indexes that no constraint created. */
  indexes: IndexModel[];
  /** Views and materialized views. */
  views: ViewModel[];
  triggers: TriggerModel[];
  rules: RuleModel[];
  policies: PolicyModel[];
  /** Extended statistics objects (CREATE STATISTICS). */
  statistics: StatisticsModel[];
  /** What exists in the database but is not recreated, each with the reason. */
  unsupported: UnsupportedObject[];
  /** The database's owner, privileges, settings and comment (absent in snapshots before they were recorded). */
  database?: DatabaseModel;
  /** Text search dictionaries and configurations (absent in snapshots before they were recreated). */
  textSearchDictionaries?: TextSearchDictionaryModel[];
  textSearchConfigurations?: TextSearchConfigurationModel[];
  /** Grants and revokes on built-in and extension objects, sorted by kind and name (absent in snapshots before they were recorded). */
  initialPrivilegesChanged?: InitialPrivilegesChange[];
}
