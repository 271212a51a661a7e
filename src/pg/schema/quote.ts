/**
 * Quoting of identifiers and literals for generated DDL.
 *
 * `quoteIdent` follows the rule PostgreSQL's own `quote_ident` applies, so
 * generated statements read like the server's deparsed ones: a name stays
 * bare only when it is ASCII lower-case letters, digits and underscores (not
 * a digit first), and is not a keyword that cannot be used as a bare name.
 */

/**
 * Keywords that are not "unreserved" in any supported server version
 * (`pg_get_keywords()` where `catcode <> 'U'`, PostgreSQL 15 to 18). Quoting a
 * word that a given version does not reserve is harmless; failing to quote one
 * it does reserve is a syntax error, so this is the union.
 */
const RESERVED = new Set(
  (
    'all analyse analyze and any array as asc asymmetric authorization between bigint binary bit ' +
    'boolean both case cast char character check coalesce collate collation column concurrently ' +
    'constraint create cross current_catalog current_date current_role current_schema current_time ' +
    'current_timestamp current_user dec decimal default deferrable desc distinct do else end except ' +
    'exists extract false fetch float for foreign freeze from full grant greatest group grouping ' +
    'having ilike in initially inner inout int integer intersect interval into is isnull join json ' +
    'json_array json_arrayagg json_exists json_object json_objectagg json_query json_scalar ' +
    'json_serialize json_table json_value lateral leading least left like limit localtime ' +
    'localtimestamp merge_action national natural nchar none normalize not notnull null nullif ' +
    'numeric offset on only or order out outer overlaps overlay placing position precision primary ' +
    'real references returning right row select session_user setof similar smallint some substring ' +
    'symmetric system_user table tablesample then time timestamp to trailing treat trim true union ' +
    'unique user using values varchar variadic verbose when where window with xmlattributes ' +
    'xmlconcat xmlelement xmlexists xmlforest xmlnamespaces xmlparse xmlpi xmlroot xmlserialize ' +
    'xmltable'
  ).split(' '),
);

const BARE = /^[a-z_][a-z0-9_]*$/;

/** Quotes an identifier for SQL when it needs it (as `quote_ident` does). */
export function quoteIdent(name: string): string {
  if (BARE.test(name) && !RESERVED.has(name)) return name;
  return `"${name.replaceAll('"', '""')}"`;
}

/** `schema.name`, each part quoted as needed. */
export function qualify(schema: string, name: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(name)}`;
}

/**
 * Quotes a string literal. A string containing a backslash uses the `E''`
 * form (backslashes doubled), so the literal means the same whatever
 * `standard_conforming_strings` is on the restoring session.
 */
export function quoteLiteral(value: string): string {
  const quoted = value.replaceAll("'", "''");
  if (value.includes('\\')) return `E'${quoted.replaceAll('\\', '\\\\')}'`;
  return `'${quoted}'`;
}
