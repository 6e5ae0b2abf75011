-- Support for the nightly duplicate scan (pkg/edtech/scan).

-- The one definition of "same e-mail": lower-cased and trimmed of spaces; for gmail.com and
-- googlemail.com (which ignore dots and +tags in the local part) dots and the +tag are dropped and
-- the domain is folded to gmail.com. IMMUTABLE so it can back an index.
CREATE FUNCTION edtech_normalize_email(email text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE
    WHEN split_part(lower(btrim(email)), '@', 2) IN ('gmail.com', 'googlemail.com')
        THEN replace(split_part(split_part(lower(btrim(email)), '@', 1), '+', 1), '.', '') || '@gmail.com'
    ELSE lower(btrim(email))
END;

-- Partial: merged accounts are never candidates, and the scan's predicates say so.
CREATE INDEX students_email_norm_idx ON students (edtech_normalize_email(email), id)
    WHERE merged_into IS NULL;
CREATE INDEX students_name_birth_idx ON students (lower(first_name), lower(last_name), birth_date, id)
    WHERE merged_into IS NULL;
