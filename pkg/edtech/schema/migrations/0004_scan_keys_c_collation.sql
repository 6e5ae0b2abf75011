-- The scan joins a range of students to the whole table on its match keys. Measured at 200k
-- students, the planner's best plan is a merge join against an index-only scan of each key index,
-- and most of its time went into sorting and comparing text under the database's linguistic
-- collation. The keys only need equality, which is byte equality under any deterministic
-- collation, so store them with COLLATE "C" (memcmp) and lower-cased names as plain columns, which
-- also makes the name index usable for index-only scans.
DROP INDEX students_email_norm_idx;
ALTER TABLE students DROP COLUMN email_norm;
ALTER TABLE students
    ADD COLUMN email_norm text COLLATE "C" GENERATED ALWAYS AS (edtech_normalize_email(email)) STORED,
    ADD COLUMN first_name_lower text COLLATE "C" GENERATED ALWAYS AS (lower(first_name)) STORED,
    ADD COLUMN last_name_lower text COLLATE "C" GENERATED ALWAYS AS (lower(last_name)) STORED;
CREATE INDEX students_email_norm_idx ON students (email_norm, id) WHERE merged_into IS NULL;
DROP INDEX students_name_birth_idx;
CREATE INDEX students_name_birth_idx ON students (last_name_lower, first_name_lower, birth_date, id)
    WHERE merged_into IS NULL;
