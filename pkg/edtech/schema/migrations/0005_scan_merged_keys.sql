-- The scan matches accounts merged away too, each standing for its live root (merged_into), so a
-- student whose only match was merged into an older account is still paired. Merged accounts get
-- key indexes of their own: the live ones' are partial on merged_into IS NULL.
CREATE INDEX students_merged_email_norm_idx ON students (email_norm, merged_into) WHERE merged_into IS NOT NULL;
CREATE INDEX students_merged_name_birth_idx ON students (last_name_lower, first_name_lower, birth_date, merged_into)
    WHERE merged_into IS NOT NULL;
