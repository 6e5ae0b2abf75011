-- The scan looks up the normalised e-mail of every student of a range; computing
-- edtech_normalize_email at query time cost about 3 µs per row, a third of the whole scan.
-- Compute it once per write instead, and index the stored value.
ALTER TABLE students ADD COLUMN email_norm text GENERATED ALWAYS AS (edtech_normalize_email(email)) STORED;
DROP INDEX students_email_norm_idx;
CREATE INDEX students_email_norm_idx ON students (email_norm, id) WHERE merged_into IS NULL;
