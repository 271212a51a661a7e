import { describe, expect, it } from 'vitest';
import { statementTables } from './parallel.js';

describe('post-data statement classification', () => {
  it('names the tables of index, key and foreign-key statements', () => {
    expect(statementTables('CREATE INDEX i ON public.files USING btree (tenant_id)')).toEqual([
      'public.files',
    ]);
    expect(
      statementTables('CREATE UNIQUE INDEX "Odd ""i""" ON "My Schema"."T 1" USING btree (a)'),
    ).toEqual(['"My Schema"."T 1"']);
    expect(
      statementTables('ALTER TABLE ONLY public.t ADD CONSTRAINT t_pkey PRIMARY KEY (id)'),
    ).toEqual(['public.t']);
    expect(
      statementTables('ALTER TABLE ONLY public.t ADD CONSTRAINT ex EXCLUDE USING gist (r WITH &&)'),
    ).toEqual(['public.t']);
    expect(
      statementTables(
        'ALTER TABLE ONLY public.c ADD CONSTRAINT f FOREIGN KEY (p) REFERENCES public.p(id) DEFERRABLE',
      ),
    ).toEqual(['public.c', 'public.p']);
  });

  it('treats everything else as a barrier, including indexes on partitioned parents', () => {
    for (const sql of [
      'CREATE INDEX i ON ONLY public.parted USING btree (a)',
      'ALTER INDEX public.i ATTACH PARTITION public.i_1',
      'CREATE TRIGGER t AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION f()',
      "SELECT pg_catalog.setval('public.s', 5, true)",
      'COMMENT ON TABLE public.t IS $$x$$',
      'ALTER TABLE public.t ADD CONSTRAINT c CHECK (a > 0)',
    ]) {
      expect(statementTables(sql), sql).toBeUndefined();
    }
  });
});
