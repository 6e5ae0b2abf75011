// Package schema owns the edtech reference schema: the students table, the tables that hang off it
// (with the traps of the production schema: unique (student_id, course_id), two FKs from one table,
// CASCADE children, nullable FKs, composite keys, an FK to a composite key, a three-deep chain and a
// one-row-per-student table), the merge audit table and the indexes of the duplicate scan.
//
// The schema is a list of embedded, numbered SQL migrations. [Apply] brings a database up to date:
// it is idempotent, records what it applied in edtech_schema_migrations, and holds a transaction-level
// advisory lock so that several processes may call it at the same time.
package schema
